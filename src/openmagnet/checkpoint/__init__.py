"""One checkpoint package: locate a model (find.py: hub id, folder, file, bundled `openmagnet/demo`), read either
layout (read.py: audiocraft's state_dict.bin / compression_state_dict.bin, safetensors, a save_pretrained folder's
config.json), build it strictly (build.py over strict.py, the one strict loader), and write either layout
(write.py). layout.py names the files and the one error, CheckpointError. The names below are the package's public
interface; the rooms import one another through public names only.

Loading is strict and safe: torch.load(weights_only=True) or safetensors only; every tensor of the checkpoint must
land in a parameter and every parameter must come from the checkpoint, with matching shapes, otherwise one error
lists all offenders.
"""
from .build import LoadedModel, check_summary, codec_from_package, describe, lm_from_package, load_model, \
    resolve_codec
from .find import bundled_model_dir, check_hub_id, hub_download, hub_file, resolve_file
from .layout import (AUDIOCRAFT_FORMAT_VERSION, CARD_FILE, CODEC_FILE, CODEC_HF_FILE, CODEC_SAFETENSORS_FILE,
                     CONFIG_FILE, FORMAT_VERSION, HUB_CONFIG_FILE, HUB_FILES, LAYOUTS, LM_FILE, LM_SAFETENSORS_FILE,
                     MODEL_FILES, SAFETENSORS_FORMS, TEXT_PROJ_KEY, CheckpointError)
from .read import (ModelFiles, bundled_generation, dump_yaml, load_package, parse_xp_cfg, read_config,
                   read_model_files, read_safetensors, saved_config)
from .strict import check_state_dict, load_strict, name_list, state_problems
from .write import (audiocraft_writers, check_lm_state, default_license, export_model, fp16_state, from_scratch,
                    model_card, model_task, push_folder, push_model, save_model, with_generation)
from ..locate import BUNDLED_MODELS

__all__ = ["CheckpointError", "LoadedModel", "ModelFiles", "load_model", "read_model_files", "saved_config",
           "read_config", "resolve_file", "resolve_codec", "bundled_model_dir", "bundled_generation", "check_hub_id",
           "hub_file", "hub_download", "load_package", "read_safetensors", "parse_xp_cfg", "dump_yaml",
           "check_state_dict", "state_problems", "load_strict", "name_list", "lm_from_package", "codec_from_package",
           "describe", "check_summary", "export_model", "audiocraft_writers", "fp16_state", "check_lm_state",
           "save_model", "with_generation", "model_card", "default_license", "from_scratch", "model_task",
           "push_folder", "push_model",
           "BUNDLED_MODELS", "LM_FILE", "CODEC_FILE", "LM_SAFETENSORS_FILE", "CODEC_HF_FILE", "CODEC_SAFETENSORS_FILE",
           "CONFIG_FILE", "HUB_CONFIG_FILE", "CARD_FILE", "HUB_FILES", "MODEL_FILES", "SAFETENSORS_FORMS",
           "AUDIOCRAFT_FORMAT_VERSION", "FORMAT_VERSION", "LAYOUTS", "TEXT_PROJ_KEY"]
