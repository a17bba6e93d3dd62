"""Training data: audio manifests, side-car metadata and the segment dataset (SPEC §4.3).

    openmagnet data index AUDIO_DIR --out MANIFEST_DIR      # writes MANIFEST_DIR/data.jsonl
    metas = read_manifest('MANIFEST_DIR')
    check_metadata(metas, 'music')
    loader = make_loader(SegmentDataset(metas, kind='music', segment_duration=10, sample_rate=32000,
                                        channels=1), batch_size=8, start_step=0)

Importing this package loads nothing heavy (its names are imported on first use; the modules load torch and
numpy, and soundfile and julius in the functions that read audio). Inference code never imports it (STYLE §3.2).
"""
from __future__ import annotations

import importlib
import typing as tp

_LAZY = {  # name -> module: imported on first use, so that `openmagnet data --help` (data/command.py) loads no torch
    **{name: "dataset" for name in ("SegmentDataset", "SkipCounter", "StepSampler", "collate", "make_loader")},
    **{name: "info" for name in ("MusicInfo", "augment_music_description", "check_metadata", "find_info_path",
                                 "load_music_info", "load_sound_info", "sound_description")},
    **{name: "manifest" for name in ("AudioMeta", "IndexResult", "index_audio_dir", "read_manifest")},
}
__all__ = [
    "AudioMeta", "IndexResult", "index_audio_dir", "read_manifest",
    "MusicInfo", "load_music_info", "augment_music_description", "sound_description", "load_sound_info",
    "find_info_path", "check_metadata",
    "SegmentDataset", "StepSampler", "SkipCounter", "collate", "make_loader",
]


def __getattr__(name: str) -> tp.Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
