"""The files of a MAGNeT model folder, in both layouts, and the one error of the checkpoint package.

audiocraft's released layout: `state_dict.bin` (the LM: fp16 `best_state` + `xp.cfg` YAML) and
`compression_state_dict.bin` (the codec: `best_state` + `xp.cfg`, or a `{'pretrained': name}` pointer), with the
same LM as `model.safetensors` (xp.cfg in its metadata). The hub-native layout (`MAGNeT.save_pretrained`):
`config.json`, `model.safetensors`, `compression_model.safetensors` and a `README.md` card. The bundled models hold
`model.safetensors` and `compression.safetensors`.
"""
from __future__ import annotations

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
LM_SAFETENSORS_FILE = "model.safetensors"  # the same LM tensors, xp.cfg in the metadata (export_model)
CODEC_HF_FILE = "compression_model.safetensors"  # the codec of a save_pretrained directory
CODEC_SAFETENSORS_FILE = "compression.safetensors"  # a full codec the same way (the bundled models)
CONFIG_FILE = "config.json"  # the openmagnet config of a save_pretrained folder or repo
HUB_CONFIG_FILE = CONFIG_FILE
CARD_FILE = "README.md"
# what a directory may hold instead of each audiocraft file, in the order looked for
SAFETENSORS_FORMS = {LM_FILE: (LM_SAFETENSORS_FILE,), CODEC_FILE: (CODEC_HF_FILE, CODEC_SAFETENSORS_FILE)}
# the only files ever fetched from a hub repo: the audiocraft layout and the save_pretrained one
HUB_FILES = (LM_FILE, CODEC_FILE, CONFIG_FILE, LM_SAFETENSORS_FILE, CODEC_HF_FILE)
# what a model folder of either layout holds (a folder with any of them is a model folder)
MODEL_FILES = (CONFIG_FILE, LM_SAFETENSORS_FILE, CODEC_HF_FILE, LM_FILE, CODEC_FILE)
AUDIOCRAFT_FORMAT_VERSION = "1.3.0"  # the `version` written into exported files
FORMAT_VERSION = 1  # of config.json; a newer one is refused with "upgrade openmagnet"
LAYOUTS = ("hf", "audiocraft")
TEXT_PROJ_KEY = "condition_provider.conditioners.description.output_proj.weight"
LOCAL_FOLDER = f"a local model folder holding {LM_FILE} and {CODEC_FILE}"  # the route that needs no hub


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or loaded; the message says what to do."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' for none), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


__all__ = ["LM_FILE", "CODEC_FILE", "LM_SAFETENSORS_FILE", "CODEC_HF_FILE", "CODEC_SAFETENSORS_FILE", "CONFIG_FILE",
           "HUB_CONFIG_FILE", "CARD_FILE", "SAFETENSORS_FORMS", "HUB_FILES", "MODEL_FILES",
           "AUDIOCRAFT_FORMAT_VERSION", "FORMAT_VERSION", "LAYOUTS", "TEXT_PROJ_KEY", "LOCAL_FOLDER",
           "CheckpointError", "first_line"]
