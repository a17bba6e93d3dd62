"""Reading a model's files, whatever their layout: audiocraft's `.bin` packages (torch.load with weights_only=True,
zip bombs refused), safetensors files (the xp.cfg YAML in their metadata), and a save_pretrained folder's
config.json. `read_model_files` gives the packages that build.py turns into models. xp.cfg is read as safe YAML only,
bounded in size and aliases."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import typing as tp
import zipfile
from pathlib import Path

import torch

from ..config import check_generation, codec_config_from_xp, generation_from_xp, lm_config_from_xp, show, \
    text_config_from_xp
from ..locate import BUNDLED_MODELS, missing_path
from .find import bundled_model_dir, hub_download, hub_file, resolve_file
from .layout import (CODEC_FILE, CODEC_HF_FILE, CONFIG_FILE, FORMAT_VERSION, LM_FILE, LM_SAFETENSORS_FILE,
                     TEXT_PROJ_KEY, CheckpointError, first_line)
from .strict import name_list

MAX_XP_CFG = 1 << 20  # characters; audiocraft's experiment configs are a few thousand
MAX_XP_ALIASES = 64  # audiocraft's configs (OmegaConf.to_yaml) have none
PathLike = tp.Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# One file
# ------------------------------------------------------------------------------------------------
def load_package(path: tp.Union[str, os.PathLike]) -> dict:
    """torch.load(weights_only=True) a checkpoint dict; corrupt or truncated files get a clear error."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_safetensors_package(path)
    _check_archive(path)
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused something
        raise CheckpointError(f"{path}: refused: its pickle asks for {_refusal(exc)}, which torch's weights-only "
                              f"loader does not allow (openmagnet never runs code from a checkpoint); the file is "
                              f"corrupt or not a MAGNeT checkpoint: delete it and download it again") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read this checkpoint, it is truncated or corrupt "
                              f"({type(exc).__name__}: {first_line(exc)}); delete it and download it again") from None
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(pkg).__name__}")
    return pkg


def _check_archive(path: Path) -> None:
    """torch.save writes a zip of stored (uncompressed) members. A compressed member could inflate to gigabytes
    inside torch.load (a zip bomb), so any archive that is not made of stored members only is refused first."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except Exception as exc:  # zipfile raises BadZipFile, OSError, ValueError, EOFError, ... on a damaged file
        raise CheckpointError(f"{path}: cannot read this checkpoint, it is truncated or corrupt "
                              f"({type(exc).__name__}: {first_line(exc)}); delete it and download it again") from None
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed or sum(m.file_size for m in members) > path.stat().st_size:
        what = f"its member {show(packed[0])} is compressed" if packed else "its members add up to more than the file"
        raise CheckpointError(f"{path}: refused: {what}, which torch.save never writes; the file is corrupt or was "
                              f"re-packed: delete it and download it again")


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, in a few words ('Unsupported global: GLOBAL posix.system ...'),
    without its advice to retry with weights_only=False."""
    boilerplate = ("Weights only load failed", "(1)", "(2)", "Please file an issue", "Check the documentation")
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(boilerplate):
            sentence = line.split(". ")[0].rstrip(".")
            return sentence if len(sentence) <= 200 else sentence[:200] + "..."
    return "something it cannot name"


def read_safetensors(path: tp.Union[str, os.PathLike]) -> tp.Tuple[tp.Dict[str, torch.Tensor], tp.Dict[str, str]]:
    """(tensors, metadata) of a safetensors file, on the CPU; a corrupt or truncated file gets a clear error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError, or torch refusing a dtype the header names
        raise CheckpointError(f"{path}: cannot read this safetensors file, it is truncated or corrupt "
                              f"({type(exc).__name__}: {first_line(exc)}); delete it and download it again") from None
    return state, metadata


def _load_safetensors_package(path: Path) -> dict:
    """A safetensors file as the dict the audiocraft file holds: tensors as `best_state`, the `xp.cfg`
    YAML from the file's metadata; a codec file with no tensors and `pretrained` in its metadata as the
    `{'pretrained': name}` pointer."""
    state, metadata = read_safetensors(path)
    if "pretrained" in metadata and not state:
        return {"pretrained": metadata["pretrained"]}
    if "xp.cfg" not in metadata:
        raise CheckpointError(f"{path}: no 'xp.cfg' in the safetensors metadata; export the model with "
                              f"openmagnet.checkpoint.export_model or MAGNeT.save_pretrained, which store it there")
    return {"best_state": state, "xp.cfg": metadata["xp.cfg"]}


def parse_xp_cfg(text: tp.Any, source: str) -> dict:
    """audiocraft's `xp.cfg` YAML. OmegaConf interpolations (`${...}`) stay plain strings: only the
    plain values that openmagnet needs are read from it. Safe YAML only (no tags that build objects),
    at most MAX_XP_CFG characters and a few aliases (no "billion laughs")."""
    import yaml

    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise CheckpointError(f"{source}: 'xp.cfg' is a {type(text).__name__}, expected a YAML string")
    if len(text) > MAX_XP_CFG:
        raise CheckpointError(f"{source}: 'xp.cfg' is {len(text):,} characters long, far more than an experiment "
                              f"config; the file is corrupt: delete it and download it again")
    try:
        cfg = yaml.load(text, Loader=_xp_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{source}: 'xp.cfg' is not valid YAML ({first_line(exc)})") from None
    except Exception as exc:  # RecursionError (nesting), ValueError (a date or an int too long), ...
        raise CheckpointError(f"{source}: 'xp.cfg' is not valid YAML ({type(exc).__name__}: "
                              f"{show(first_line(exc))[1:-1]})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: 'xp.cfg' does not hold a mapping")
    return cfg


def dump_yaml(cfg: dict, what: str) -> str:
    """An xp.cfg dict as the YAML text the audiocraft files store; ValueError naming `what` for a value YAML
    cannot store."""
    import yaml

    try:
        return yaml.safe_dump(cfg, sort_keys=False)
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} holds a value YAML cannot store ({exc}); use plain dicts, lists, strings and "
                         f"numbers") from None


def _xp_loader():
    """yaml.SafeLoader that refuses more than MAX_XP_ALIASES aliases."""
    import yaml

    class XPLoader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_XP_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_XP_ALIASES} aliases (*name): not an experiment config")
            return super().compose_node(parent, index)

    return XPLoader


def package_part(pkg: dict, key: str, source: str) -> tp.Any:
    """pkg[key], or a CheckpointError naming the keys the file has."""
    if key not in pkg:
        raise CheckpointError(f"{source}: no {key!r} entry (keys: {name_list(pkg)}); "
                              f"is this an audiocraft-exported MAGNeT file?")
    return pkg[key]


def bundled_generation(name: str) -> tp.Optional[dict]:
    """The generation settings a bundled model stores for itself (config.generation_from_xp), read from
    its safetensors metadata alone; None for another name, a bundled model this install lacks, or one
    that stores none."""
    folder = bundled_model_dir(name) if name in BUNDLED_MODELS else None
    if folder is None:
        return None
    from safetensors import safe_open

    with safe_open(str(folder / LM_SAFETENSORS_FILE), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
    return generation_from_xp(parse_xp_cfg(metadata.get("xp.cfg", {}), str(folder)))


# ------------------------------------------------------------------------------------------------
# A model, whatever its layout
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A model's packages as lm_from_package / codec_from_package read them, and its configs."""
    lm_package: dict
    lm_source: str
    codec_package: dict
    codec_source: str
    xp_cfg: dict                 # the LM's audiocraft xp.cfg
    codec_cfg: dict              # {'xp.cfg': dict} for a full EnCodec, {'pretrained': name} for a pointer
    generation: tp.Optional[dict]
    summary: tp.Optional[dict] = None  # config.json's summary (layout 'hf'), for `check_summary`


def read_model_files(name: PathLike, codec: tp.Optional[PathLike] = None) -> ModelFiles:
    """The files of a model named by hub id, local folder (either layout), bundled name or explicit LM file
    (its codec then comes from the same folder); `codec` names another codec file, folder or hub id."""
    saved = saved_config(name)
    if saved is not None:
        return _read_saved(name, saved[0], saved[1], codec)
    lm_path = resolve_file(name, LM_FILE)
    codec_source = codec if codec is not None else (lm_path.parent if Path(name).expanduser().is_file() else name)
    codec_path = resolve_file(codec_source, CODEC_FILE)
    lm_package = load_package(lm_path)
    codec_package = load_package(codec_path)
    xp = parse_xp_cfg(package_part(lm_package, "xp.cfg", str(lm_path)), str(lm_path))
    return ModelFiles(lm_package, str(lm_path), codec_package, str(codec_path), xp,
                      _codec_cfg(codec_package, str(codec_path)), _generation(xp, str(lm_path)))


def saved_config(name: PathLike) -> tp.Optional[tp.Tuple[Path, dict]]:
    """(path, content) of the config.json of a save_pretrained folder or hub repo; None for any other model
    (a config.json that is not openmagnet's is ignored)."""
    text = str(name)
    path = Path(text).expanduser()
    if text in BUNDLED_MODELS or path.is_file():
        return None
    if path.is_dir():
        file = path / CONFIG_FILE
        if not file.is_file():
            return None
    elif missing_path(text) is not None:
        return None  # a path, or a bare word: resolve_file says "no such local folder or file"
    else:
        file = _hub_config(text)
        if file is None:
            return None
    config = read_config(file)
    if config.get("library_name") != "openmagnet" and config.get("model_type") == "magnet":
        raise CheckpointError(f"{name} is a MAGNeT in the transformers layout (openmagnet convert --to transformers): "
                              f"load it with transformers after `import openmagnet.transformers`, or convert it back "
                              f"with `openmagnet convert --to openmagnet {name} DST`")
    return (file, config) if config.get("library_name") == "openmagnet" else None


def _hub_config(repo_id: str) -> tp.Optional[Path]:
    """The repo's config.json, or None where it has none (the released repos), or the hub cannot be reached:
    the audiocraft layout's errors then say what to do."""
    from huggingface_hub import try_to_load_from_cache

    try:
        if not isinstance(try_to_load_from_cache(repo_id, CONFIG_FILE), str) and \
                isinstance(try_to_load_from_cache(repo_id, LM_FILE), str):
            return None  # a released-layout model already downloaded: no request for a config.json it lacks
        return hub_file(repo_id, CONFIG_FILE)
    except Exception:  # not in the repo, no such repo, a malformed id, offline, network: "not this layout here"
        return None


def read_config(path: Path) -> dict:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read this config.json ({type(exc).__name__}: {exc})") from None
    return config if isinstance(config, dict) else {}


def _read_saved(name: PathLike, path: Path, config: dict, codec: tp.Optional[PathLike]) -> ModelFiles:
    source = str(path)
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{source}: format_version {version!r} is not one this openmagnet reads (up to "
                              f"{FORMAT_VERSION}): upgrade openmagnet")
    xp = _config_part(config, "lm", source).get("xp.cfg")
    codec_cfg = _config_part(config, "compression_model", source)
    if not isinstance(xp, dict):
        raise CheckpointError(f"{source}: lm must hold the LM's audiocraft config as 'xp.cfg': {{...}}")
    if not (isinstance(codec_cfg.get("xp.cfg"), dict) or isinstance(codec_cfg.get("pretrained"), str)):
        raise CheckpointError(f"{source}: compression_model must hold the codec's 'xp.cfg': {{...}} or the "
                              f"'pretrained': NAME of a Hugging Face EnCodec")
    try:
        generation = check_generation(config.get("generation"), "generation") or None
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    lm_path = _saved_file(name, path, LM_SAFETENSORS_FILE)
    lm_package = {"best_state": read_safetensors(lm_path)[0], "xp.cfg": xp}
    _check_xp(lm_package["best_state"], xp, codec_cfg.get("xp.cfg") if codec is None else None, source)
    if codec is not None:
        codec_path = resolve_file(codec, CODEC_FILE)
        codec_package, codec_source = load_package(codec_path), str(codec_path)
        codec_cfg = _codec_cfg(codec_package, codec_source)
    elif "pretrained" in codec_cfg:
        codec_package, codec_source = {"pretrained": codec_cfg["pretrained"]}, source
    else:
        codec_path = _saved_file(name, path, CODEC_HF_FILE)
        codec_package = {"best_state": read_safetensors(codec_path)[0], "xp.cfg": codec_cfg["xp.cfg"]}
        codec_source = str(codec_path)
    return ModelFiles(lm_package, str(lm_path), codec_package, codec_source, xp, dict(codec_cfg), generation,
                      summary={**config, "source": source})


def _check_xp(lm_state: dict, xp: dict, codec_xp: tp.Optional[dict], source: str) -> None:
    """The xp.cfgs of config.json must parse, so that their errors name config.json, not the tensor files."""
    try:
        if TEXT_PROJ_KEY in lm_state:  # else lm_from_package says the file is no MAGNeT LM
            text_dim = int(lm_state[TEXT_PROJ_KEY].shape[1])
            lm_config_from_xp(xp, text_dim=text_dim)
            text_config_from_xp(xp, text_dim=text_dim)
        if codec_xp is not None:
            codec_config_from_xp(codec_xp)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def _config_part(config: dict, key: str, source: str) -> dict:
    if not isinstance(config.get(key), dict):
        raise CheckpointError(f"{source}: no {key!r} section; write the folder with MAGNeT.save_pretrained")
    return config[key]


def _saved_file(name: PathLike, config_path: Path, filename: str) -> Path:
    folder = Path(str(name)).expanduser()
    if not folder.is_dir():
        return hub_download(str(name), filename)
    if not (folder / filename).is_file():
        raise CheckpointError(f"{folder} has no {filename}: a save_pretrained folder holds {CONFIG_FILE}, "
                              f"{LM_SAFETENSORS_FILE} and {CODEC_HF_FILE}")
    return folder / filename


def _codec_cfg(package: dict, source: str) -> dict:
    if "pretrained" in package:
        return {"pretrained": str(package["pretrained"])}
    return {"xp.cfg": parse_xp_cfg(package_part(package, "xp.cfg", source), source)}


def _generation(xp: dict, source: str) -> tp.Optional[dict]:
    try:
        return generation_from_xp(xp)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


__all__ = ["load_package", "read_safetensors", "parse_xp_cfg", "dump_yaml", "package_part", "bundled_generation",
           "ModelFiles", "read_model_files", "saved_config", "read_config", "MAX_XP_CFG", "MAX_XP_ALIASES"]
