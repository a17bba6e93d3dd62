"""openmagnet: MAGNeT masked non-autoregressive text-to-music / text-to-sound on current PyTorch.

    from openmagnet import MAGNeT, audio_write
    model = MAGNeT.get_pretrained('facebook/magnet-small-10secs')
    wav = model.generate(['happy rock'])
    audio_write('out/rock', wav[0].cpu(), model.sample_rate, strategy='loudness', loudness_compressor=True)

Importing the package loads only torch; transformers, huggingface_hub and the audio libraries are
imported by the functions that use them.
"""
from __future__ import annotations

import importlib
import typing as tp

from ._version import __version__
__all__ = ["MAGNeT", "audio_write", "audio_read", "GenerationParams", "CheckpointError", "__version__"]

_LAZY = {
    "MAGNeT": ("openmagnet.api", "MAGNeT"),
    "audio_write": ("openmagnet.audio", "audio_write"),
    "audio_read": ("openmagnet.audio", "audio_read"),
    "GenerationParams": ("openmagnet.config", "GenerationParams"),
    "CheckpointError": ("openmagnet.checkpoint", "CheckpointError"),
}


def __getattr__(name: str) -> tp.Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'openmagnet' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
