"""VGGish, the embedder of FAD, in PyTorch, loading the torch-hub port's released `vggish-10086976.pth` as is.

    model = VGGish.load()                                 # finds the file (evaluation/weights.py), strict
    frames = model.embed_fad(wav, sample_rate)            # [windows, 128]: audiocraft's FAD recipe
    frames = model.embed(vggish_examples(wav16k))         # [examples, 128]: torchvggish's framing

`embed_fad` follows what audiocraft's FAD runs (Google's `frechet_audio_distance` tool on the TF model):
the clip is taken to 16 kHz mono (julius), peak-normalised to -1 dBFS and written as 16-bit PCM (rounded
here, no file), scaled by 1 / max(0.1, max(x)) (the largest sample, not the largest |x|), cut into 1-s
windows every 0.5 s (a clip under 1 s gives none), each window a 96 x 64 log-mel example; the embedding is
the last layer's output **before** its ReLU, with no PCA (TF's `vggish/embedding`). torchvggish's own
defaults differ (final ReLU, PCA + 8-bit quantisation, non-overlapping 0.96-s examples): `vggish_examples`
and `embed(..., relu=True)` give those where wanted. That the port's weights reproduce TF's numbers is the
port author's claim (torchvggish issue #7), not checked here.
"""
from __future__ import annotations

import typing as tp

import numpy as np
import torch
from torch import nn

from .weights import VGGISH, fingerprint, require_weights

SAMPLE_RATE = 16000
WINDOW_SECONDS, HOP_SECONDS = 0.025, 0.010
MEL_BANDS, MEL_MIN_HZ, MEL_MAX_HZ, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10-ms frames
FAD_WINDOW, FAD_STEP = 16000, 8000  # the FAD tool: 1-s windows every 0.5 s


# --------------------------------------------------------------------------- the log-mel front end (float64)

def _htk_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def mel_matrix(n_bins: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[n_bins, MEL_BANDS] triangles equally spaced on the HTK mel scale between MEL_MIN_HZ and MEL_MAX_HZ,
    evaluated at the FFT bin frequencies, with the DC bin zeroed (VGGish's `spectrogram_to_mel_matrix`)."""
    bins_mel = _htk_mel(np.linspace(0.0, sample_rate / 2, n_bins))
    edges = np.linspace(_htk_mel(np.array(MEL_MIN_HZ)), _htk_mel(np.array(MEL_MAX_HZ)), MEL_BANDS + 2)
    low, centre, high = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - low) / (centre - low)
    falling = (high - bins_mel[:, None]) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def _frame(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    count = 1 + (x.shape[0] - length) // hop
    if count <= 0:
        return np.zeros((0, length) + x.shape[1:], dtype=x.dtype)
    index = np.arange(length)[None, :] + hop * np.arange(count)[:, None]
    return x[index]


def log_mel(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[T] float64 audio -> [frames, 64] log(mel magnitude + 0.01): 25-ms periodic Hann windows every 10 ms,
    a 512-point FFT magnitude, the mel matrix above."""
    window = int(round(sample_rate * WINDOW_SECONDS))
    hop = int(round(sample_rate * HOP_SECONDS))
    n_fft = 2 ** int(np.ceil(np.log(window) / np.log(2.0)))
    hann = 0.5 - 0.5 * np.cos(2 * np.pi / window * np.arange(window))
    frames = _frame(np.asarray(samples, dtype=np.float64), window, hop)
    magnitude = np.abs(np.fft.rfft(frames * hann, n_fft))
    return np.log(magnitude @ mel_matrix(magnitude.shape[1], sample_rate) + LOG_OFFSET)


def vggish_examples(wav16k: np.ndarray) -> torch.Tensor:
    """torchvggish's framing: [T] 16-kHz mono -> [n, 1, 96, 64] float32, non-overlapping 0.96-s examples."""
    examples = _frame(log_mel(wav16k), EXAMPLE_FRAMES, EXAMPLE_FRAMES)
    return torch.from_numpy(examples).float()[:, None]


def fad_examples(wav16k: torch.Tensor) -> torch.Tensor:
    """audiocraft's FAD recipe, [T] 16-kHz mono -> [windows, 1, 96, 64] float32 (see the module doc)."""
    x = wav16k.float()
    peak = x.abs().max()
    if not bool(peak > 0):
        raise ValueError("silent clip: FAD's peak normalisation divides by its peak; drop it or add audio")
    # audio_write's peak normalisation and 16-bit write, in float32 as audiocraft does them
    pcm = (x * (10 ** (-1 / 20) / peak) * 32768).round().clamp(-32768, 32767).double().numpy()
    pcm = pcm / max(0.1, float(pcm.max()))
    examples = [_frame(log_mel(pcm[start:start + FAD_WINDOW]), EXAMPLE_FRAMES, EXAMPLE_FRAMES)
                for start in range(0, pcm.shape[0] - FAD_WINDOW + 1, FAD_STEP)]
    if not examples:
        return torch.zeros(0, 1, EXAMPLE_FRAMES, MEL_BANDS)
    return torch.from_numpy(np.concatenate(examples)).float()[:, None]


# --------------------------------------------------------------------------- the network

class VGGish(nn.Module):
    """VGG-like net of the torch-hub port: `features` (six 3x3 convs, four max-pools; state-dict indices 0, 3,
    6, 8, 11, 13) and `embeddings` (Linear 12288 -> 4096 -> 4096 -> 128, ReLU between, and after the last
    only with relu=True)."""

    def __init__(self):
        super().__init__()
        layers: tp.List[nn.Module] = []
        channels = 1
        for width in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU()]
                channels = int(width)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                                        nn.Linear(4096, 128))
        self.fingerprint = ""

    @classmethod
    def load(cls, path: tp.Optional[str] = None, weights_dir: tp.Optional[str] = None) -> "VGGish":
        from .checkpoints import load_strict

        path = path or str(require_weights(VGGISH, weights_dir))
        model = cls()
        load_strict(model, path, what="VGGish")
        model.fingerprint = fingerprint(path, "vggish:fad-recipe:pre-relu")
        return model.eval()

    @torch.no_grad()
    def embed(self, examples: torch.Tensor, relu: bool = False, batch: int = 64) -> torch.Tensor:
        """[n, 1, 96, 64] log-mel examples -> [n, 128] (before the final ReLU unless relu=True)."""
        out = [self._forward(examples[i:i + batch]) for i in range(0, examples.shape[0], batch)]
        emb = torch.cat(out) if out else torch.zeros(0, 128)
        return emb.relu() if relu else emb

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # [n, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # the TF graph's NHWC order
        return self.embeddings(x)

    def embed_fad(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wav [C, T] at sample_rate -> [windows, 128] frames of audiocraft's FAD recipe."""
        from ..audio import convert_audio

        mono = convert_audio(wav.float()[None], sample_rate, SAMPLE_RATE, 1)[0, 0]
        return self.embed(fad_examples(mono))
