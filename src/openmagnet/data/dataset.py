"""Segment dataset, step-indexed sampling and batching for training.

Mirrors audiocraft `data/audio_dataset.py` segment sampling with `sample_on_weight/duration` false
(SPEC §4.3): a file chosen uniformly, a seek uniform in [0, max(0, duration - segment * min_segment_ratio)],
read, resample (julius), down-mix, zero-pad. Unlike the reference, an item is a pure function of
(seed, index), where index is the global sample number, so resuming at step s only needs s (see
`StepSampler`) and DataLoader workers give the same items as the main process.

Shapes: B batch, C channels, L = int(segment_duration * sample_rate) samples.
"""
from __future__ import annotations

import itertools
import random
import sys
import typing as tp
import warnings

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from ..audio import audio_read, convert_audio
from .info import (KINDS, MusicInfo, augment_music_description, find_info_path, load_music_info,
                   load_sound_info, sound_description)
from .manifest import AudioMeta


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


class SegmentDataset(Dataset):
    """Fixed-length training segments with their text, item `index` = global sample number (any int >= 0).

    The item is built from `random.Random(f"{seed}:{index}")` only: same (seed, index), same item,
    in any process. An unreadable file is recorded in the item's 'skipped' list and the item is
    re-drawn with `random.Random(f"{seed}:{index}:{attempt}")`, up to max_retries times.

    Item: {'wav': [C, L] float32, 'description': str or None, 'path': str, 'skipped': list of str}.
    """

    item_key = 'wav'  # what `_read_segment` returns (TokenSegmentDataset: 'codes')

    def __init__(self, metas: tp.Sequence[AudioMeta], *, kind: str, segment_duration: float, sample_rate: int,
                 channels: int, min_segment_ratio: float = 0.8, seed: int = 0, merge_text_p: float = 0.0,
                 drop_desc_p: float = 0.0, drop_other_p: float = 0.0,
                 external_metadata_dir: tp.Optional[str] = None, max_retries: int = 10):
        if kind not in KINDS:
            raise ValueError(f"kind must be 'music' or 'sound', got {kind!r}")
        if not metas:
            raise ValueError("the dataset has no audio files; index a folder with `openmagnet data index`")
        if segment_duration <= 0 or sample_rate <= 0 or channels < 1:
            raise ValueError(f"segment_duration and sample_rate must be > 0 and channels >= 1, got "
                             f"{segment_duration}, {sample_rate}, {channels}")
        if not 0.0 <= min_segment_ratio <= 1.0:
            raise ValueError(f"min_segment_ratio must be in [0, 1], got {min_segment_ratio}")
        for name, p in (('merge_text_p', merge_text_p), ('drop_desc_p', drop_desc_p), ('drop_other_p', drop_other_p)):
            _check_probability(name, p)
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.metas = list(metas)
        self.kind = kind
        self.segment_duration = float(segment_duration)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.min_segment_ratio = float(min_segment_ratio)
        self.seed = seed
        self.merge_text_p, self.drop_desc_p, self.drop_other_p = merge_text_p, drop_desc_p, drop_other_p
        self.external_metadata_dir = external_metadata_dir
        self.max_retries = max_retries

    @property
    def segment_length(self) -> int:
        """L, the number of samples of every item."""
        return int(self.segment_duration * self.sample_rate)

    def __len__(self) -> int:
        return sys.maxsize  # unbounded: indices are global sample numbers supplied by StepSampler

    def _read_segment(self, meta: AudioMeta, rng: random.Random) -> torch.Tensor:
        """A random segment of meta's file -> [C, L]; ValueError / OSError when the file cannot be read."""
        seek = rng.uniform(0.0, max(0.0, meta.duration - self.segment_duration * self.min_segment_ratio))
        wav, sr = audio_read(meta.path, seek_time=seek, duration=self.segment_duration)  # [C_file, T]
        if wav.shape[-1] == 0:
            raise ValueError(f"no audio samples in {meta.path} after {seek:.2f} s")
        wav = convert_audio(wav, sr, self.sample_rate, self.channels)  # [C, T'], T' ~ L
        length = self.segment_length
        wav = wav[..., :length]
        return torch.nn.functional.pad(wav, (0, length - wav.shape[-1])).float().contiguous()

    def _description(self, meta: AudioMeta, rng: random.Random) -> tp.Optional[str]:
        """The item's text from its side-car JSON (music: augmented; sound: lowercased, one of a list)."""
        if self.kind == 'sound':
            data = load_sound_info(meta.path, meta.info_path, self.external_metadata_dir)
            return sound_description(data, rng, source=f"side-car JSON of {meta.path}")
        path = find_info_path(meta.path, meta.info_path, self.external_metadata_dir)
        info = load_music_info(path) if path is not None else MusicInfo()
        return augment_music_description(info, rng, self.merge_text_p, self.drop_desc_p, self.drop_other_p)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            raise ValueError(f"dataset indices are global sample numbers >= 0, got {index}")
        skipped: tp.List[str] = []
        error = ''
        for attempt in range(self.max_retries + 1):
            rng = random.Random(f"{self.seed}:{index}" + (f":{attempt}" if attempt else ''))
            meta = self.metas[rng.randrange(len(self.metas))]
            try:
                wav = self._read_segment(meta, rng)
            except (ValueError, OSError) as err:  # unreadable, corrupt or deleted audio
                skipped.append(meta.path)
                error = str(err)
                continue
            return {self.item_key: wav, 'description': self._description(meta, rng), 'path': meta.path,
                    'skipped': skipped}
        raise ValueError(f"sample {index}: {len(skipped)} tries found no readable audio (last: {error}); "
                         "fix or remove the broken files and re-run `openmagnet data index`")


class StepSampler(Sampler[int]):
    """Infinite sample indices, one training step after another, for a DataLoader.

    Step s on rank r gets indices s*B*W + r*B + i for i < B (B batch_size per rank, W world_size), so the
    data position is the step number: starting at start_step continues a run exactly.
    """

    def __init__(self, start_step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if start_step < 0 or batch_size < 1:
            raise ValueError(f"start_step must be >= 0 and batch_size >= 1, got {start_step}, {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank}, world_size {world_size}")
        super().__init__()
        self.start_step, self.batch_size, self.rank, self.world_size = start_step, batch_size, rank, world_size

    def step_indices(self, step: int) -> range:
        """The sample indices of `step` on this rank."""
        first = (step * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __iter__(self) -> tp.Iterator[int]:
        for step in itertools.count(self.start_step):
            yield from self.step_indices(step)


def collate(items: tp.Sequence[dict]) -> dict:
    """Batch dataset items: {'wav': [B, C, L] (or 'codes': [B, K, T]), 'description': [B], 'path': [B],
    'skipped': all skipped paths}."""
    key = 'codes' if 'codes' in items[0] else 'wav'
    return {key: torch.stack([item[key] for item in items]),
            'description': [item['description'] for item in items],
            'path': [item['path'] for item in items],
            'skipped': [path for item in items for path in item['skipped']]}


def make_loader(dataset: SegmentDataset, batch_size: int, start_step: int, rank: int = 0, world_size: int = 1,
                num_workers: int = 0) -> DataLoader:
    """An endless DataLoader whose n-th batch is training step start_step + n on this rank (see StepSampler)."""
    sampler = StepSampler(start_step, batch_size, rank, world_size)
    return DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      num_workers=num_workers, collate_fn=collate, persistent_workers=num_workers > 0)


class SkipCounter:
    """Counts the unreadable files reported in batches (main process) and warns once per file."""

    def __init__(self) -> None:
        self.count = 0  # skips so far, each re-draw of an item counted once
        self.paths: tp.Set[str] = set()

    def update(self, batch_or_paths: tp.Union[dict, tp.Iterable[str]]) -> int:
        """Add a batch's 'skipped' paths (or a list of paths); returns how many were added."""
        paths = batch_or_paths['skipped'] if isinstance(batch_or_paths, dict) else list(batch_or_paths)
        for path in paths:
            self.count += 1
            if path not in self.paths:
                self.paths.add(path)
                warnings.warn(f"skipped unreadable audio {path} ({self.count} skipped so far)", stacklevel=2)
        return len(paths)
