"""The CLAP score (text consistency) as audiocraft computes it, with LAION-CLAP's released music model.

    scorer = ClapScorer.load()                     # music_audioset_epoch_15_esc_90.14.pt + roberta-base tokenizer
    scorer.score(wav, sample_rate, "a calm piano melody")   # cosine(text embedding, audio embedding)

The network is LAION-CLAP's HTSAT-base audio branch (no fusion) and its RoBERTa text branch. The released
checkpoint maps onto transformers' modules exactly: HTSAT's Swin stages onto `ClapAudioEncoder` (each fused
`qkv` projection is split into its query, key and value rows), the text branch onto `RobertaModel`. What
transformers leaves out is done here, from the checkpoint's own tensors: torchlibrosa's front end (a
convolutional STFT whose kernels, and the slaney mel matrix, are frozen parameters of the file), the two
projections, and the tensors the score does not use but a strict load must place (HTSAT's AudioSet tagging
layers `tscam_conv` and `head`, the `audio_transform`/`text_transform` heads and both logit scales).

Audio goes to 48 kHz mono; clips longer than 10 s are cut to a 10-s window at a random offset (laion_clap
draws it from numpy's global, unseeded generator, so audiocraft's score moves between runs; here the offset
comes from a seeded generator, or is passed explicitly), shorter ones are repeated whole `int(480000 / T)`
times, then zero-padded. Captions are tokenized to 77 tokens (padded, truncated).
"""
from __future__ import annotations

import math
import typing as tp

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .weights import CLAP_MUSIC, fingerprint, require_weights

SAMPLE_RATE = 48000
WINDOW = 480000  # 10 s at 48 kHz
N_FFT, HOP, N_MELS = 1024, 480, 64
MAX_TOKENS = 77
_PREFIX = "module."
_CONSTANT_BUFFERS = ("attn_mask", "text_branch.embeddings.position_ids")


class ClapFrontEnd(nn.Module):
    """torchlibrosa's Spectrogram + LogmelFilterBank as HTSAT configures them: reflect-padded convolutional
    STFT (n_fft 1024, hop 480), power, slaney mel (64 bands), 10 log10(max(x, 1e-10)). Kernels and mel matrix
    are loaded from the checkpoint."""

    def __init__(self):
        super().__init__()
        bins = N_FFT // 2 + 1
        self.conv_real = nn.Parameter(torch.zeros(bins, 1, N_FFT), requires_grad=False)
        self.conv_imag = nn.Parameter(torch.zeros(bins, 1, N_FFT), requires_grad=False)
        self.mel = nn.Parameter(torch.zeros(bins, N_MELS), requires_grad=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, T] -> log-mel [B, 1, frames, 64]."""
        x = F.pad(wav[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        real = F.conv1d(x, self.conv_real, stride=HOP)[:, None].transpose(2, 3)
        imag = F.conv1d(x, self.conv_imag, stride=HOP)[:, None].transpose(2, 3)
        power = real ** 2 + imag ** 2
        return 10.0 * torch.log10(torch.clamp(torch.matmul(power, self.mel), min=1e-10))


def _mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden))


class _Transform(nn.Module):
    """laion_clap's MLPLayers([512, 512, 512]) head: training-time only, held for a strict load."""

    def __init__(self, width: int = 512):
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.1), nn.Linear(width, width))


class _Tagging(nn.Module):
    """HTSAT's AudioSet tagging layers (token-semantic conv and head): unused by the CLAP score."""

    def __init__(self, features: int = 1024, classes: int = 527):
        super().__init__()
        self.tscam_conv = nn.Conv2d(features, classes, kernel_size=(2, 3), padding=(0, 1))
        self.head = nn.Linear(classes, classes)


def htsat_base_config():
    from transformers import ClapAudioConfig

    return ClapAudioConfig(patch_embeds_hidden_size=128, depths=[2, 2, 12, 2], num_attention_heads=[4, 8, 16, 32],
                           hidden_size=1024, window_size=8, spec_size=256, num_mel_bins=N_MELS, patch_size=4,
                           patch_stride=[4, 4], enable_fusion=False, drop_path_rate=0.0, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)


def roberta_base_config():
    """roberta-base's published config (768 wide, 12 layers, 50,265 tokens, 514 positions)."""
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu")


class Clap(nn.Module):
    """LAION-CLAP HTSAT-base + RoBERTa, in the layout of transformers' modules (see `from_released`).

    Built on the meta device (no random initialisation of 200 M parameters only to overwrite them): load a
    checkpoint with `clap_from_state`, which assigns every tensor and fills the buffers no file holds."""

    def __init__(self):
        super().__init__()
        from transformers import RobertaModel
        from transformers.models.clap.modeling_clap import ClapAudioEncoder

        with torch.device("meta"):
            self.front = ClapFrontEnd()
            self.audio = ClapAudioEncoder(htsat_base_config())
            self.tagging = _Tagging()
            self.audio_projection = _mlp(1024, 512)
            self.audio_transform = _Transform()
            self.text = RobertaModel(roberta_base_config(), add_pooling_layer=True)
            self.text_projection = _mlp(768, 512)
            self.text_transform = _Transform()
            self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
            self.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for stage, layer in enumerate(self.audio.layers):  # no shifted windows where one window covers the map
            for block in layer.blocks:
                block.set_shift_and_window_size(self.audio.input_resolutions[stage])

    def fill_constant_buffers(self) -> None:
        """The buffers computed at construction (lost on the meta device): RoBERTa's position and token-type
        ids (not saved), Swin's relative position index and bn0's batch counter (saved, but constants)."""
        embeddings = self.text.embeddings
        positions = self.text.config.max_position_embeddings
        if embeddings.position_ids.is_meta:
            embeddings.position_ids = torch.arange(positions)[None]
        if getattr(embeddings, "token_type_ids", None) is not None and embeddings.token_type_ids.is_meta:
            embeddings.token_type_ids = torch.zeros(1, positions, dtype=torch.long)
        for layer in self.audio.layers:
            for block in layer.blocks:
                attention = block.attention.self
                if attention.relative_position_index.is_meta:
                    with torch.device("cpu"):
                        attention.relative_position_index = attention.create_relative_position_index()
        if self.audio.batch_norm.num_batches_tracked.is_meta:
            self.audio.batch_norm.num_batches_tracked = torch.tensor(0)

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 480000] 48-kHz windows -> L2-normalised [B, 512]."""
        features = self.audio(self.front(wav)).pooler_output  # [B, 1024]: bn0, bicubic to 1024 frames, Swin
        return F.normalize(self.audio_projection(features), dim=-1)

    @torch.no_grad()
    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, 77] token ids and mask -> L2-normalised [B, 512] (RoBERTa's pooled <s>, projected)."""
        pooled = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    # ------------------------------------------------------------------ the released layout
    def released_names(self) -> tp.Dict[str, str]:
        """Our state-dict key -> the released checkpoint's key (without 'module.'); query/key/value of a Swin
        block map to the block's fused `qkv` (see `from_released`)."""
        return {key: _released_name(key) for key in self.state_dict()}

    def from_released(self, state: tp.Mapping[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
        """The released checkpoint's state dict (keys without 'module.') as our state dict: renamed, each
        fused qkv split in three rows of equal height. The constant buffers only the file keeps (Swin's
        shifted-window attention masks, RoBERTa's position ids) are left out (see `check_constant_buffers`)."""
        out: tp.Dict[str, torch.Tensor] = {}
        for key, name in self.released_names().items():
            if name.endswith(("qkv.weight", "qkv.bias")):
                part = {"query": 0, "key": 1, "value": 2}[key.split(".")[-2]]
                fused = state.get(name)
                if fused is not None:
                    rows = fused.shape[0] // 3
                    out[key] = fused[part * rows:(part + 1) * rows]
            elif name in state:
                out[key] = state[name]
        return out

    def check_constant_buffers(self, state: tp.Mapping[str, torch.Tensor], path: str) -> None:
        for name, value in state.items():
            if name.endswith("attn_mask"):
                stage, block = int(name.split(".")[2]), int(name.split(".")[4])
                layer = self.audio.layers[stage].blocks[block]
                height, width = self.audio.input_resolutions[stage]
                expected = layer.get_attn_mask(height, width, dtype=value.dtype, device=value.device)
            elif name == "text_branch.embeddings.position_ids":
                expected = torch.arange(value.shape[-1])[None]
            else:
                continue
            if expected is None or tuple(expected.shape) != tuple(value.shape) or not torch.equal(expected, value):
                raise ValueError(f"CLAP: {path} holds a {name} unlike HTSAT-base/roberta's; is it the right file?")


_RENAMES = (  # (our fragment, released fragment), applied in order to our audio keys
    ("front.conv_real", "audio_branch.spectrogram_extractor.stft.conv_real.weight"),
    ("front.conv_imag", "audio_branch.spectrogram_extractor.stft.conv_imag.weight"),
    ("front.mel", "audio_branch.logmel_extractor.melW"),
    ("audio.batch_norm.", "audio_branch.bn0."),
    ("tagging.", "audio_branch."),
    ("audio.", "audio_branch."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    (".attention.self.relative_position", ".attn.relative_position"),
    (".attention.self.query.", ".attn.qkv."),
    (".attention.self.key.", ".attn.qkv."),
    (".attention.self.value.", ".attn.qkv."),
    (".attention.output.dense.", ".attn.proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)


def _released_name(key: str) -> str:
    if key.startswith("text."):
        return "text_branch." + key[len("text."):]
    for ours, theirs in _RENAMES:
        if ours in key:
            key = key.replace(ours, theirs, 1)
    return key


def released_state_dict(model: Clap) -> tp.Dict[str, torch.Tensor]:
    """Our state dict in the released layout (keys without 'module.'; query/key/value fused back into qkv, the
    constant buffers added), e.g. to fabricate a file in the released format (from a fresh `Clap()` the
    parameters are meta tensors: shapes only, to be filled)."""
    model.fill_constant_buffers()
    state = model.state_dict()
    out: tp.Dict[str, torch.Tensor] = {}
    for key, name in model.released_names().items():
        if name.endswith(("qkv.weight", "qkv.bias")):
            if ".attention.self.query." in key:
                out[name] = torch.cat([state[key], state[key.replace(".query.", ".key.")],
                                       state[key.replace(".query.", ".value.")]])
            continue
        out[name] = state[key]
        if name == "text_branch.embeddings.LayerNorm.bias":
            out["text_branch.embeddings.position_ids"] = torch.arange(
                model.text.config.max_position_embeddings)[None]
    for stage, layer in enumerate(model.audio.layers):
        height, width = model.audio.input_resolutions[stage]
        for block, blk in enumerate(layer.blocks):
            mask = blk.get_attn_mask(height, width, dtype=torch.float32, device="cpu")
            if mask is not None:
                out[f"audio_branch.layers.{stage}.blocks.{block}.attn_mask"] = mask
    return out


def load_clap(path: str) -> Clap:
    """The released checkpoint ({'state_dict': {'module.' + key: tensor}} or a bare state dict), loaded
    strictly: every tensor placed, every parameter filled, one-line errors otherwise."""
    from .checkpoints import read_state

    return clap_from_state(read_state(path, "CLAP"), path)


def clap_from_state(data: tp.Mapping[str, tp.Any], path: str = "the checkpoint") -> Clap:
    from .checkpoints import check_state, name_list

    what = "CLAP"
    state = data.get("state_dict", data)
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} has no state dict; is it the right file?")
    state = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state.items()}
    model = Clap()
    known = set(model.released_names().values())
    unexpected = [k for k in state if k not in known and not k.endswith(_CONSTANT_BUFFERS)]
    if unexpected:
        raise ValueError(f"{what}: {path} does not fit HTSAT-base/roberta (unexpected {name_list(unexpected)}); "
                         f"is it the right file?")
    missing = known - set(state)
    if missing:
        raise ValueError(f"{what}: {path} does not fit HTSAT-base/roberta (missing {name_list(missing)}); "
                         f"is it the right file?")
    model.fill_constant_buffers()
    model.check_constant_buffers(state, path)
    mapped = model.from_released(state)
    check_state(model, mapped, path, what)
    model.load_state_dict(mapped, strict=True, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a transformers release that adds a buffer we do not fill
        raise RuntimeError(f"CLAP: {', '.join(left[:3])} not filled by {path}; report this with your transformers "
                           f"version")
    return model.requires_grad_(False).eval()


def window_audio(wav: torch.Tensor, offset: tp.Optional[int] = None,
                 rng: tp.Optional[np.random.Generator] = None) -> tp.Tuple[torch.Tensor, int]:
    """A [T] 48-kHz clip as laion_clap's 'rand_trunc' + 'repeatpad' make it: (window [480000], crop offset)."""
    length = wav.shape[-1]
    if length > WINDOW:
        if offset is None:
            offset = int((rng or np.random.default_rng()).integers(0, length - WINDOW + 1))
        if not 0 <= offset <= length - WINDOW:
            raise ValueError(f"crop offset {offset} is outside 0..{length - WINDOW} for a clip of {length} samples")
        return wav[offset:offset + WINDOW], offset
    if length == 0:
        raise ValueError("CLAP got a clip of 0 samples; remove it or regenerate it")
    if length < WINDOW:
        wav = F.pad(wav.repeat(WINDOW // length), (0, WINDOW - WINDOW // length * length))
    return wav, 0


def load_tokenizer(weights_dir: tp.Optional[str] = None, cache_dir: tp.Optional[str] = None):
    """roberta-base's tokenizer: from a `roberta-base` folder (vocab.json + merges.txt) under --weights DIR, else
    the Hugging Face cache (`cache_dir`, default $HF_HUB_CACHE; offline, never downloaded here). The files are
    looked up explicitly: transformers 5 would silently build an empty 5-token tokenizer without them."""
    from pathlib import Path

    from transformers import RobertaTokenizer

    folder = None
    if weights_dir:
        hits = sorted(p.parent for p in Path(weights_dir).rglob("vocab.json")
                      if "roberta" in str(p.parent) and (p.parent / "merges.txt").is_file())
        folder = hits[0] if hits else None
    if folder is None:
        from huggingface_hub import try_to_load_from_cache

        files = [try_to_load_from_cache("roberta-base", name, cache_dir=cache_dir) for name in ("vocab.json",
                                                                                                "merges.txt")]
        if all(isinstance(f, str) for f in files):
            folder = Path(files[0]).parent
    if folder is None:
        raise FileNotFoundError("CLAP: the roberta-base tokenizer (vocab.json, merges.txt) is not in the Hugging Face "
                                "cache; run `hf download roberta-base vocab.json merges.txt config.json` once "
                                "(or put a roberta-base folder under --weights DIR)")
    tokenizer = RobertaTokenizer.from_pretrained(str(folder))
    if len(tokenizer) <= 5:
        raise ValueError(f"CLAP: {folder} holds no usable roberta-base vocabulary; download it again")
    return tokenizer


class ClapScorer:
    """Text-audio cosine of LAION-CLAP's music model, per clip (audiocraft's CLAPTextConsistencyMetric without
    its batch padding: each clip is embedded at its own length)."""

    def __init__(self, model: Clap, tokenizer, fingerprint_: str = "", seed: int = 0):
        self.model, self.tokenizer, self.fingerprint = model, tokenizer, fingerprint_
        self.rng = np.random.default_rng(seed)
        self._texts: tp.Dict[str, torch.Tensor] = {}

    @classmethod
    def load(cls, path: tp.Optional[str] = None, weights_dir: tp.Optional[str] = None, seed: int = 0) -> "ClapScorer":
        path = path or str(require_weights(CLAP_MUSIC, weights_dir))
        tokenizer = load_tokenizer(weights_dir)
        return cls(load_clap(path), tokenizer, fingerprint(path, f"clap-htsat-base:crop-seed{seed}"), seed)

    def tokenize(self, texts: tp.Sequence[str]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt")
        return tokens["input_ids"], tokens["attention_mask"]

    def text_embedding(self, text: str) -> torch.Tensor:
        if text not in self._texts:
            self._texts[text] = self.model.embed_text(*self.tokenize([text]))[0]
        return self._texts[text]

    def audio_embedding(self, wav: torch.Tensor, sample_rate: int,
                        offset: tp.Optional[int] = None) -> tp.Tuple[torch.Tensor, int]:
        """wav [C, T] -> ([512], crop offset)."""
        from ..audio import convert_audio

        mono = convert_audio(wav[None].float(), sample_rate, SAMPLE_RATE, 1)[0, 0]
        window, offset = window_audio(mono, offset, self.rng)
        return self.model.embed_audio(window[None])[0], offset

    def score(self, wav: torch.Tensor, sample_rate: int, text: str, offset: tp.Optional[int] = None) -> float:
        audio, _ = self.audio_embedding(wav, sample_rate, offset)
        return float(F.cosine_similarity(audio[None], self.text_embedding(text)[None], dim=1, eps=1e-8))
