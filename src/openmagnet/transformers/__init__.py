"""MAGNeT as a transformers model: importing this package registers it with transformers' Auto classes.

    import openmagnet.transformers  # registers model_type 'magnet' with AutoConfig, AutoModelForTextToWaveform
    from transformers import pipeline  # and AutoProcessor (nothing else registers it: `import openmagnet` loads
                                       # only torch)
    synth = pipeline("text-to-audio", "path/to/magnet-transformers")
    music = synth("lo-fi music with a soothing melody", forward_params={"do_sample": True})
    # {"audio": array [C, L] (C=1: [L]), "sampling_rate": 32000}

A folder in this layout is written by `openmagnet convert --to transformers SRC DST` from any model openmagnet loads
(or `save_transformers(MAGNeT.get_pretrained(SRC), DST)`): config.json (MagnetConfig), generation_config.json (the
model's generation settings), model.safetensors (text encoder, codec and decoder), the tokenizer's files and
processor_config.json (MagnetProcessor). The classes:

    MagnetConfig                     configuration.py
    MagnetForConditionalGeneration   modeling.py: generate() runs openmagnet's own decoding over its own modules
    MagnetProcessor                  processing.py: tokenizer + EncodecFeatureExtractor
    save_transformers / from_magnet  conversion.py: openmagnet's MAGNeT to this layout, and back (to_magnet)

The transformers versions this face is tested with are TRANSFORMERS_RANGE; an older one is refused at import with a
one-line ImportError naming the version needed.
"""
from __future__ import annotations

import importlib.metadata
import re

TRANSFORMERS_MIN = "5.20"  # the oldest release the face is tested with (5.20.0, 5.25.0; pyproject.toml pins the same)
TRANSFORMERS_BELOW = "6"
TRANSFORMERS_RANGE = f">={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}"


def _release(text: str) -> tuple:
    found = re.match(r"\d+(\.\d+)*", text)
    return tuple(int(p) for p in found.group(0).split(".")) if found else ()


def check_transformers_version(installed: str) -> None:
    """ImportError (one line) unless `installed` is in TRANSFORMERS_RANGE."""
    release = _release(installed)
    if not _release(TRANSFORMERS_MIN) <= release < _release(TRANSFORMERS_BELOW):
        raise ImportError(f"openmagnet.transformers needs transformers{TRANSFORMERS_RANGE}, but {installed} is "
                          f"installed: pip install 'transformers{TRANSFORMERS_RANGE}'")


try:
    _INSTALLED = importlib.metadata.version("transformers")
except importlib.metadata.PackageNotFoundError:
    raise ImportError(f"openmagnet.transformers needs transformers{TRANSFORMERS_RANGE}, which is not installed: "
                      f"pip install 'transformers{TRANSFORMERS_RANGE}'") from None
check_transformers_version(_INSTALLED)

from transformers import AutoConfig, AutoModelForTextToWaveform, AutoProcessor  # noqa: E402

from .configuration import MODEL_TYPE, MagnetConfig  # noqa: E402
from .conversion import from_magnet, quiet_progress_bars, save_folder, save_transformers  # noqa: E402
from .modeling import MagnetForConditionalGeneration, MagnetGenerateOutput  # noqa: E402
from .processing import MagnetProcessor  # noqa: E402


def register() -> None:
    """Register MAGNeT with AutoConfig, AutoModelForTextToWaveform and AutoProcessor (done on import; again is a
    no-op)."""
    AutoConfig.register(MODEL_TYPE, MagnetConfig, exist_ok=True)
    AutoModelForTextToWaveform.register(MagnetConfig, MagnetForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(MagnetConfig, MagnetProcessor, exist_ok=True)


register()

__all__ = ["MagnetConfig", "MagnetForConditionalGeneration", "MagnetGenerateOutput", "MagnetProcessor",
           "from_magnet", "save_folder", "save_transformers", "quiet_progress_bars", "register",
           "TRANSFORMERS_RANGE"]
