"""Pre-tokenised training data: every file encoded once by the frozen codec, then token segments.

Encoding audio on the fly costs a codec forward per example and step; with a token cache the
solver reads `[K, T]` codes instead. Each file is encoded whole (in chunks), so the tokens at a
segment's edges can differ slightly from encoding that segment alone (the codec sees context
beyond the cut); segments are drawn exactly as `SegmentDataset` draws them (same file, same
seek, same text for the same index), rounded to whole frames, and padded with the codes of silence.

Cache layout: `CACHE_DIR/<sha1 of path, size, mtime>.pt` (int16 codes [K, T]) and `silence.pt` ([K]).
A file that changes on disk gets a new name, so a stale cache is never read.
"""
from __future__ import annotations

import hashlib
import os
import random
import typing as tp
import warnings
from pathlib import Path

import torch

from ..audio import audio_read, convert_audio
from ..files import atomic_save
from .dataset import SegmentDataset
from .manifest import AudioMeta

SILENCE = "silence.pt"


def cache_name(meta: AudioMeta) -> str:
    stat = os.stat(meta.path)
    key = f"{os.path.abspath(meta.path)}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest() + ".pt"


@torch.no_grad()
def encode_file(codec: tp.Any, path: str, sample_rate: int, channels: int, chunk_seconds: float = 60.0,
                device: tp.Union[str, torch.device] = "cpu") -> torch.Tensor:
    """codes [K, T] of a whole file, encoded in chunks of about chunk_seconds (whole frames)."""
    wav, sr = audio_read(path)
    wav = convert_audio(wav, sr, sample_rate, channels)
    hop = int(round(sample_rate / codec.frame_rate))
    chunk = max(hop, int(chunk_seconds * sample_rate) // hop * hop)
    parts = [codec.encode(wav[None, :, start:start + chunk].to(device))[0].cpu()
             for start in range(0, wav.shape[-1], chunk)]
    return torch.cat(parts, dim=-1)


def build_token_cache(metas: tp.Sequence[AudioMeta], codec: tp.Any, cache_dir: tp.Union[str, Path], *,
                      sample_rate: int, channels: int, device: tp.Union[str, torch.device] = "cpu",
                      progress: bool = True) -> tp.Tuple[int, tp.List[str]]:
    """Encode every file not cached yet. Returns (files encoded now, unreadable paths); unreadable
    files are warned about and left out (the dataset then skips them like unreadable audio)."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not (cache_dir / SILENCE).is_file():
        silence = codec.encode(torch.zeros(1, channels, sample_rate, device=device))[0].cpu()
        atomic_save(silence[:, silence.shape[-1] // 2].to(torch.int16), cache_dir / SILENCE)
    encoded, bad = 0, []
    for meta in tqdm(metas, desc="tokenising", unit="file", disable=not progress):
        try:
            target = cache_dir / cache_name(meta)
            if target.is_file():
                continue
            codes = encode_file(codec, meta.path, sample_rate, channels, device=device)
        except (ValueError, OSError) as err:
            warnings.warn(f"skipped unreadable audio {meta.path} while tokenising ({err})", stacklevel=2)
            bad.append(meta.path)
            continue
        atomic_save(codes.to(torch.int16), target)
        encoded += 1
    return encoded, bad


class TokenSegmentDataset(SegmentDataset):
    """`SegmentDataset` over a token cache: items carry 'codes' [K, T] (int64) instead of 'wav'."""

    item_key = "codes"

    def __init__(self, metas: tp.Sequence[AudioMeta], cache_dir: tp.Union[str, Path], frame_rate: float,
                 **kwargs: tp.Any):
        super().__init__(metas, **kwargs)
        self.cache_dir = Path(cache_dir)
        self.frame_rate = float(frame_rate)
        silence = self.cache_dir / SILENCE
        if not silence.is_file():
            raise ValueError(f"{self.cache_dir} is not a token cache (no {SILENCE}); build it with build_token_cache")
        self.silence = torch.load(silence, weights_only=True).long()

    @property
    def segment_frames(self) -> int:
        return int(round(self.segment_duration * self.frame_rate))

    def _read_segment(self, meta: AudioMeta, rng: random.Random) -> torch.Tensor:
        seek = rng.uniform(0.0, max(0.0, meta.duration - self.segment_duration * self.min_segment_ratio))
        path = self.cache_dir / cache_name(meta)
        if not path.is_file():
            raise ValueError(f"{meta.path} has no tokens in {self.cache_dir} (unreadable when the cache was built)")
        codes = torch.load(path, weights_only=True).long()
        start = min(int(seek * self.frame_rate), codes.shape[-1])
        codes = codes[:, start:start + self.segment_frames]
        pad = self.segment_frames - codes.shape[-1]
        if pad > 0:
            codes = torch.cat([codes, self.silence[:, None].expand(-1, pad)], dim=-1)
        return codes.contiguous()
