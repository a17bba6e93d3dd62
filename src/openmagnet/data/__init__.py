"""Training data: audio manifests, side-car metadata and the segment dataset (SPEC §4.3).

    openmagnet data index AUDIO_DIR --out MANIFEST_DIR      # writes MANIFEST_DIR/data.jsonl
    metas = read_manifest('MANIFEST_DIR')
    check_metadata(metas, 'music')
    loader = make_loader(SegmentDataset(metas, kind='music', segment_duration=10, sample_rate=32000,
                                        channels=1), batch_size=8, start_step=0)

Importing this package loads only torch and numpy: soundfile and julius are imported by the functions
that read audio. Inference code never imports it (STYLE §3.2).
"""
from .dataset import SegmentDataset, SkipCounter, StepSampler, collate, make_loader
from .info import (MusicInfo, augment_music_description, check_metadata, find_info_path, load_music_info,
                   load_sound_info, sound_description)
from .manifest import AudioMeta, IndexResult, index_audio_dir, read_manifest

__all__ = [
    "AudioMeta", "IndexResult", "index_audio_dir", "read_manifest",
    "MusicInfo", "load_music_info", "augment_music_description", "sound_description", "load_sound_info",
    "find_info_path", "check_metadata",
    "SegmentDataset", "StepSampler", "SkipCounter", "collate", "make_loader",
]
