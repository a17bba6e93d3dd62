"""PaSST (Koutini et al. 2022), the AudioSet classifier behind audiocraft's KLD, in PyTorch, loading the
released `passt-s-f128-p16-s10-ap.476-swa.pt` (10 s, sound) and `passt-s-f128-20sec-p16-s10-ap.474-swa.pt`
(20 s, music) as they are distributed.

    model = PaSST.load("20s")                                # finds the file (evaluation/weights.py); strict
    probs = model.label_distributions(wav, sample_rate)     # [segments, 527]: audiocraft's per-segment rows

The network is a distilled ViT (DeiT-base: 12 blocks of 768, 12 heads) over 16 x 16 patches of a 128-band
log-mel with stride 10, separate frequency and time position embeddings (the time one cut to the input's
length), and the classifier on the mean of the class and distillation tokens after the final norm; the
distillation head is stored but unused. The front end (eval mode) is hear21passt's: pre-emphasis
[-0.97, 1], |STFT|^2 with n_fft 1024, hop 320 and an 800-sample symmetric Hann window (centred, reflect
padding), Kaldi mel banks (128 bands, 0-15 kHz, no Nyquist bin), log(x + 1e-5), then (x + 4.5) / 5.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .kld import PASST_SAMPLE_RATE, passt_segments
from .weights import PASST_10S, PASST_20S, fingerprint, require_weights

VARIANTS = {"10s": (PASST_10S, 998, 10.0), "20s": (PASST_20S, 2000, 20.0)}  # file, input frames, window


def kaldi_mel_banks(n_mels: int = 128, n_fft: int = 1024, sample_rate: int = PASST_SAMPLE_RATE,
                    low: float = 0.0, high: float = 15000.0) -> torch.Tensor:
    """[n_mels, n_fft / 2 + 1] triangles equally spaced on mel(f) = 1127 ln(1 + f / 700) between `low` and
    `high`, evaluated at k * sr / n_fft for k < n_fft / 2 (Kaldi's MelBanks, float32 in torchaudio's order),
    plus a zero column for the Nyquist bin."""
    mel_low, mel_high = 1127.0 * math.log(1.0 + low / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (n_mels + 1)
    index = torch.arange(n_mels).unsqueeze(1)
    left, centre, right = mel_low + index * delta, mel_low + (index + 1.0) * delta, mel_low + (index + 2.0) * delta
    fft_mel = (1127.0 * (1.0 + (sample_rate / n_fft) * torch.arange(n_fft / 2) / 700.0).log()).unsqueeze(0)
    up = (fft_mel - left) / (centre - left)
    down = (right - fft_mel) / (right - centre)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return F.pad(banks, (0, 1))


class PaSSTFrontEnd(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        self.register_buffer("window", torch.hann_window(800, periodic=False), persistent=False)
        self.register_buffer("banks", kaldi_mel_banks(), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, T] at 32 kHz -> [B, 128, frames] normalised log-mel."""
        x = F.conv1d(wav.unsqueeze(1), self.preemphasis).squeeze(1)
        spec = torch.stft(x, 1024, hop_length=320, win_length=800, window=self.window, center=True,
                          normalized=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = torch.matmul(self.banks, power)
        return ((mel + 0.00001).log() + 4.5) / 5.0


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=16, stride=10)


class PaSSTNet(nn.Module):
    """The transformer, with the released state-dict names (cls_token, dist_token, new_pos_embed,
    freq_new_pos_embed, time_new_pos_embed, patch_embed.proj, blocks.N, norm, head.0/1, head_dist)."""

    def __init__(self, frames: int, classes: int = 527, dim: int = 768, depth: int = 12, heads: int = 12):
        super().__init__()
        grid_f, grid_t = 128 // 10, frames // 10
        self.patch_embed = _PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, grid_f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid_t))
        self.blocks = nn.Sequential(*[_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))
        self.head_dist = nn.Linear(dim, classes)

    def forward(self, mel: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """[B, 128, frames] -> (logits [B, classes], features [B, dim])."""
        x = self.patch_embed.proj(mel.unsqueeze(1))  # [B, dim, f, t]
        if x.shape[-1] > self.time_new_pos_embed.shape[-1]:
            raise ValueError(f"PaSST input of {x.shape[-1]} patches is longer than the model's "
                             f"{self.time_new_pos_embed.shape[-1]}: split the audio into windows first")
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        B = x.shape[0]
        tokens = torch.cat([self.cls_token.expand(B, -1, -1) + self.new_pos_embed[:, :1],
                            self.dist_token.expand(B, -1, -1) + self.new_pos_embed[:, 1:]], dim=1)
        x = self.norm(self.blocks(torch.cat([tokens, x], dim=1)))
        features = (x[:, 0] + x[:, 1]) / 2
        return self.head(features), features


class PaSST(nn.Module):
    """Front end + network of one released PaSST model ('10s' or '20s')."""

    def __init__(self, variant: str = "20s"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"PaSST variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.window_seconds = VARIANTS[variant][2]
        self.mel = PaSSTFrontEnd()
        self.net = PaSSTNet(VARIANTS[variant][1])
        self.fingerprint = ""

    @classmethod
    def load(cls, variant: str = "20s", path: tp.Optional[str] = None,
             weights_dir: tp.Optional[str] = None) -> "PaSST":
        from .checkpoints import load_strict

        model = cls(variant)
        path = path or str(require_weights(VARIANTS[variant][0], weights_dir))
        load_strict(model.net, path, what=f"PaSST {variant}")
        model.fingerprint = fingerprint(path, f"passt-{variant}:audiocraft-segments")
        return model.eval()

    @torch.no_grad()
    def logits(self, segment: torch.Tensor) -> torch.Tensor:
        """[B, T] 32-kHz audio (T at most the model's window) -> [B, 527]."""
        return self.net(self.mel(segment))[0]

    @torch.no_grad()
    def label_distributions(self, wav: torch.Tensor, sample_rate: int,
                            length: tp.Optional[int] = None) -> torch.Tensor:
        """wav [C, T] -> [segments, 527] softmax rows, one per segment (kld.passt_segments); [0, 527] when
        every piece is 0.15 s or shorter."""
        rows = [self.logits(s).softmax(-1) for s in passt_segments(wav, sample_rate, self.window_seconds, length)]
        return torch.cat(rows) if rows else torch.zeros(0, 527)
