"""Finding, reading, strictly loading and writing audiocraft MAGNeT checkpoints (SPEC §7).

A model is two files, `state_dict.bin` (LM: fp16 `best_state` + `xp.cfg` YAML) and
`compression_state_dict.bin` (codec: `best_state` + `xp.cfg`, or a `{'pretrained': name}` pointer).
`resolve_file` finds them from a hub id (downloaded into the standard Hugging Face cache), a local
directory, or an explicit file. Files are read with `torch.load(weights_only=True)` only. A directory
without `state_dict.bin` may hold the LM as `model.safetensors` instead (xp.cfg in its metadata, as
written by `export_model`), and the codec as `compression_model.safetensors` (`MAGNeT.save_pretrained`)
or `compression.safetensors` (the bundled models). A save_pretrained directory is read through its
config.json by `hub.read_model_files`. `resolve_codec` finds the frozen codec a training run uses.
`export_model` writes the layout (audiocraft utils/export.py), for `openmagnet export` and
`MAGNeT.save_pretrained(layout='audiocraft')`.

Loading is strict: every tensor of the checkpoint must land in a parameter and every parameter
must come from the checkpoint, with matching shapes; otherwise one error lists all offenders.
Models are built on the meta device and the checkpoint tensors are assigned (cast to the chosen
dtype on the way), so a fp16 file never costs more than one full-precision copy of the weights.
"""
from __future__ import annotations

import os
import pickle
import re
import typing as tp
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .codec.encodec import EncodecModel
from .codec.hf import HFEncodec
from .config import CodecConfig, codec_config_from_xp, generation_from_xp, lm_config_from_xp, show, \
    text_config_from_xp
from .files import safetensors_save, save_torch, write_all_atomically
from .lm import MagnetLM
from .locate import BUNDLED_MODELS, OFFLINE_HINT, cache_only, hub_unreachable, is_path_like, missing_path, \
    unreachable_message

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
LM_SAFETENSORS_FILE = "model.safetensors"  # the same LM tensors, xp.cfg in the metadata (hub.export_model)
CODEC_HF_FILE = "compression_model.safetensors"  # the codec of a save_pretrained directory (hub.py)
CODEC_SAFETENSORS_FILE = "compression.safetensors"  # a full codec the same way (the bundled models)
# what a directory may hold instead of each audiocraft file, in the order looked for
SAFETENSORS_FORMS = {LM_FILE: (LM_SAFETENSORS_FILE,), CODEC_FILE: (CODEC_HF_FILE, CODEC_SAFETENSORS_FILE)}
HUB_CONFIG_FILE = "config.json"  # the openmagnet config of a save_pretrained repo (hub.py)
# the only files ever fetched from a hub repo: the audiocraft layout and the save_pretrained one
HUB_FILES = (LM_FILE, CODEC_FILE, HUB_CONFIG_FILE, LM_SAFETENSORS_FILE, CODEC_HF_FILE)
# A hub repo id: `name` or `owner/name`, letters, digits, '-', '_', '.' (huggingface_hub's rule), so that it
# can only ever name a repo, never a path (no '..', no '/' beyond the owner's, no '?', '#', '@' or spaces).
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
MAX_XP_CFG = 1 << 20  # characters; audiocraft's experiment configs are a few thousand


def bundled_model_dir(name: str) -> tp.Optional[Path]:
    """The folder of a bundled model when this install has it, else None."""
    folder = Path(__file__).resolve().parent / "assets" / BUNDLED_MODELS[name]
    return folder if (folder / LM_SAFETENSORS_FILE).is_file() else None


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
AUDIOCRAFT_FORMAT_VERSION = "1.3.0"  # the `version` written into exported files
TEXT_PROJ_KEY = "condition_provider.conditioners.description.output_proj.weight"
LOCAL_FOLDER = f"a local model folder holding {LM_FILE} and {CODEC_FILE}"  # the route that needs no hub


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or loaded; the message says what to do."""


# ------------------------------------------------------------------------------------------------
# Finding files
# ------------------------------------------------------------------------------------------------
def resolve_file(name_or_path: tp.Union[str, os.PathLike], filename: str) -> Path:
    """A checkpoint file from a file path, a directory holding `filename` (or its safetensors form),
    a bundled model name (`openmagnet/demo`), or a hub repo id."""
    if not str(name_or_path).strip():
        raise CheckpointError(f"no model named (got {str(name_or_path)!r}): pass a directory holding {LM_FILE} and "
                              f"{CODEC_FILE}, or a hub id such as facebook/magnet-small-10secs")
    if str(name_or_path) in BUNDLED_MODELS:
        folder = bundled_model_dir(str(name_or_path))
        if folder is None:
            raise CheckpointError(f"the bundled model {name_or_path} is not in this copy of openmagnet "
                                  f"(src/openmagnet/assets/{BUNDLED_MODELS[str(name_or_path)]}); rebuild it with "
                                  f"recipes/demo/build.sh, or name another model")
        name_or_path = folder
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (filename, *SAFETENSORS_FORMS.get(filename, ())):
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"{path} has no {filename}: a MAGNeT model directory holds {LM_FILE} and {CODEC_FILE} "
                              f"(audiocraft's layout), or config.json, {LM_SAFETENSORS_FILE} and {CODEC_HF_FILE} "
                              f"(MAGNeT.save_pretrained)")
    name = str(name_or_path)
    problem = missing_path(name)  # a path, or a bare word (every MAGNeT repo has an owner): a mistyped folder
    if problem is not None:
        raise CheckpointError(problem)
    return _hub_download(name, filename)


_is_path_like = is_path_like  # the name other rooms import (hub.py)


def _hub_reason(exc: BaseException) -> str:
    return hub_unreachable() or f"{type(exc).__name__}: {_first_line(exc)}"


def check_hub_id(name: str) -> str:
    """`name` when it can only name a Hugging Face hub repo (`owner/name`); otherwise a CheckpointError."""
    if not isinstance(name, str) or not _HUB_ID.fullmatch(name) or ".." in name or "--" in name \
            or name.endswith((".", "-")):
        raise CheckpointError(
            f"{show(name)} is not a local file or directory, nor a Hugging Face hub id (owner/name: letters, digits, "
            f"'-', '_', '.'; no '..' or '--'): pass a directory holding {LM_FILE} and {CODEC_FILE}, or a hub id "
            f"such as facebook/magnet-small-10secs")
    return name


def _hub_file(repo_id: str, filename: str) -> Path:
    """hf_hub_download of one of HUB_FILES from a checked repo id, raising the hub's own exception on failure."""
    from huggingface_hub import hf_hub_download  # imported on first download only

    check_hub_id(repo_id)
    if filename not in HUB_FILES:
        raise CheckpointError(f"openmagnet fetches only {', '.join(HUB_FILES[:-1])} and {HUB_FILES[-1]} from the hub, "
                              f"not {show(filename)}")
    # one quick check first: an unreachable hub makes hf_hub_download retry for a minute; then the cache alone
    path = Path(hf_hub_download(repo_id=repo_id, filename=filename, library_name="openmagnet",
                                local_files_only=hub_unreachable() is not None))
    if path.name != filename:
        raise CheckpointError(f"the hub cache gave {path} for {filename} of {repo_id}: clear that cache entry")
    return path


def _hub_download(repo_id: str, filename: str) -> Path:
    check_hub_id(repo_id)
    try:
        return _hub_file(repo_id, filename)
    except Exception as exc:  # the hub raises many types: offline, missing repo, network, auth
        unreachable = hub_unreachable()
        if unreachable is None:
            raise CheckpointError(f"cannot get {filename} of {repo_id} from the Hugging Face hub "
                                  f"({type(exc).__name__}: {_first_line(exc)}): check the id, or use "
                                  f"{LOCAL_FOLDER}") from None
        raise CheckpointError(unreachable_message(repo_id, filename, unreachable, LOCAL_FOLDER)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


# ------------------------------------------------------------------------------------------------
# Reading files
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
                              f"({type(exc).__name__}: {_first_line(exc)}); delete it and download it again") from None
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
                              f"({type(exc).__name__}: {_first_line(exc)}); delete it and download it again") from None
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
                              f"({type(exc).__name__}: {_first_line(exc)}); delete it and download it again") from None
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
        raise CheckpointError(f"{source}: 'xp.cfg' is not valid YAML ({_first_line(exc)})") from None
    except Exception as exc:  # RecursionError (nesting), ValueError (a date or an int too long), ...
        raise CheckpointError(f"{source}: 'xp.cfg' is not valid YAML ({type(exc).__name__}: "
                              f"{show(_first_line(exc))[1:-1]})") from None
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


MAX_XP_ALIASES = 64  # audiocraft's configs (OmegaConf.to_yaml) have none


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


def _package_part(pkg: dict, key: str, source: str) -> tp.Any:
    if key not in pkg:
        raise CheckpointError(f"{source}: no {key!r} entry (keys: {_names(pkg)}); "
                              f"is this an audiocraft-exported MAGNeT file?")
    return pkg[key]


# ------------------------------------------------------------------------------------------------
# Strict loading
# ------------------------------------------------------------------------------------------------
def _names(keys: tp.Iterable[tp.Any], limit: int = 40) -> str:
    """Sorted keys for a message, each cut short, at most `limit` of them."""
    names = sorted(k if isinstance(k, str) and len(k) <= 200 else show(k) for k in keys)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_state_dict(module: nn.Module, state: tp.Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected, mis-shaped or mistyped tensor."""
    expected = {k: v for k, v in module.state_dict().items()}
    problems = []
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing:
        problems.append("missing: " + _names(missing))
    if unexpected:
        problems.append("unexpected: " + _names(unexpected))
    for k in sorted(set(expected) & set(state)):
        v, want = state[k], expected[k]
        if not isinstance(v, torch.Tensor):
            problems.append(f"{k} is a {type(v).__name__}, not a tensor")
        elif tuple(v.shape) != tuple(want.shape):
            problems.append(f"{k} has shape {list(v.shape)}, expected {list(want.shape)}")
        elif v.is_meta:
            problems.append(f"{k} holds no data (a meta tensor)")
        elif v.is_floating_point() != want.is_floating_point() or v.is_complex() or v.is_quantized or \
                v.layout != torch.strided:
            problems.append(f"{k} is {v.dtype}{'' if v.layout == torch.strided else f' ({v.layout})'}, "
                            f"expected {want.dtype}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_strict(module: nn.Module, state: tp.Mapping[str, torch.Tensor], source: str,
                device: torch.device,
                dtype: tp.Union[None, torch.dtype, tp.Callable[[str], torch.dtype]]) -> nn.Module:
    """Assign checkpoint tensors to a (meta-device) module, casting floating tensors to `dtype`
    (one dtype, or a function of the key). Each tensor is converted once and the converted copy
    is what the module keeps. Tensors holding NaN or inf (bit rot in a download) are refused."""
    check_state_dict(module, state, source)
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{source}: {_names(broken, 5)} hold NaN or inf values: the file is corrupt; "
                              f"delete it and download it again")
    converted = {}
    for k, v in state.items():
        wanted = dtype(k) if callable(dtype) else dtype
        target = wanted if (wanted is not None and v.is_floating_point()) else v.dtype
        converted[k] = v.to(device=device, dtype=target)
    module.load_state_dict(converted, strict=True, assign=True)
    for sub in module.modules():  # assigned LSTM weights are separate tensors: pack them for cuDNN once,
        if isinstance(sub, nn.RNNBase):  # not on every call (a no-op off CUDA)
            sub.flatten_parameters()
    return module


# ------------------------------------------------------------------------------------------------
# Building the models
# ------------------------------------------------------------------------------------------------
def lm_from_package(pkg: dict, source: str, device: torch.device, dtype: torch.dtype):
    """(MagnetLM, LMConfig, TextConfig) from a loaded `state_dict.bin`."""
    state = _package_part(pkg, "best_state", source)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a raw solver checkpoint rather than an export
    if not isinstance(state, dict) or TEXT_PROJ_KEY not in state:
        raise CheckpointError(f"{source}: 'best_state' has no {TEXT_PROJ_KEY}; not a MAGNeT LM checkpoint")
    proj = state[TEXT_PROJ_KEY]
    if not isinstance(proj, torch.Tensor) or proj.dim() != 2 or not 1 <= proj.shape[1] <= 1 << 16:
        raise CheckpointError(f"{source}: {TEXT_PROJ_KEY} is not a [dim, text_dim] matrix "
                              f"({show(getattr(proj, 'shape', proj))}); the file is corrupt")
    xp = parse_xp_cfg(_package_part(pkg, "xp.cfg", source), source)
    text_dim = int(proj.shape[1])
    try:
        lm_cfg = lm_config_from_xp(xp, text_dim=text_dim)
        text_cfg = text_config_from_xp(xp, text_dim=text_dim)
        lm = MagnetLM.empty(lm_cfg)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_strict(lm, state, source, device, lambda key: MagnetLM.weight_dtype(key, dtype))
    return lm.eval().requires_grad_(False), lm_cfg, text_cfg


def codec_from_package(pkg: dict, source: str, device: torch.device):
    """The codec from a loaded `compression_state_dict.bin`: the full audiocraft EnCodec, or the
    `{'pretrained': name}` pointer resolved through transformers' EncodecModel. Always float32."""
    if "pretrained" in pkg:
        return _pointed_codec(pkg["pretrained"], source, device)
    state = _package_part(pkg, "best_state", source)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'best_state' is a {type(state).__name__}, not a dict of tensors")
    xp = parse_xp_cfg(_package_part(pkg, "xp.cfg", source), source)
    try:
        cfg: CodecConfig = codec_config_from_xp(xp)
        with torch.device("meta"):
            codec = EncodecModel(cfg)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_strict(codec, state, source, device, torch.float32)
    return codec.eval().requires_grad_(False)


def _pointed_codec(name: tp.Any, source: str, device: torch.device):
    """The Hugging Face EnCodec a `{'pretrained': 'facebook/encodec_32khz'}` codec file points to: a hub id
    only (never a local path a downloaded file could aim at)."""
    try:
        check_hub_id(name)
    except CheckpointError:
        raise CheckpointError(f"{source}: its codec pointer {show(name)} is not a Hugging Face hub id such as "
                              f"facebook/encodec_32khz; the file is corrupt or not a MAGNeT codec file") from None
    try:
        return HFEncodec.from_pretrained(name, device=device, local_files_only=cache_only(name))
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a missing or foreign repo
        raise CheckpointError(
            f"{source}: cannot load the Hugging Face EnCodec {name!r} it points to ({_hub_reason(exc)}); run once "
            f"where the hub can be reached ({OFFLINE_HINT} afterwards), or point HF_HUB_CACHE at a cache that holds it"
        ) from None


# ------------------------------------------------------------------------------------------------
# Writing the audiocraft layout (audiocraft utils/export.py)
# ------------------------------------------------------------------------------------------------
def export_model(out_dir: tp.Union[str, os.PathLike], lm_state: tp.Mapping[str, torch.Tensor], xp_cfg: dict,
                 codec_package: dict, after_first: tp.Optional[tp.Callable[[], None]] = None) -> Path:
    """Write state_dict.bin, compression_state_dict.bin and model.safetensors into out_dir (created).
    lm_state: the LM's state dict (any float dtype, any device), stored in fp16; it must match the
    model xp_cfg describes. Each file is written to a temporary file in out_dir first; existing
    files are replaced only once all three are complete, so a failure leaves out_dir as it was (a process
    killed between the three renames leaves some replaced: export again). `after_first`: see
    files.write_all_atomically (the kill -9 harness pauses there)."""
    writers = audiocraft_writers(lm_state, xp_cfg, codec_package)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_all_atomically(out, writers, after_first)
    return out


def audiocraft_writers(lm_state: tp.Mapping[str, torch.Tensor], xp_cfg: dict,
                       codec_package: dict) -> tp.Dict[str, tp.Callable[[Path], None]]:
    """The writers of the three files of `export_model`, once everything is checked."""
    best_state = fp16_state(lm_state)
    check_lm_state(best_state, xp_cfg)
    _check_codec_package(codec_package)
    cfg_text = dump_yaml(xp_cfg, "xp_cfg")
    lm_pkg = {"best_state": best_state, "xp.cfg": cfg_text, "version": AUDIOCRAFT_FORMAT_VERSION,
              "exported": True, "openmagnet_version": __version__}
    metadata = {"xp.cfg": cfg_text, "format": "pt", "version": AUDIOCRAFT_FORMAT_VERSION,
                "openmagnet_version": __version__}
    # renamed into place in this order: an export killed half-way into a new folder leaves it without
    # state_dict.bin, so that it does not pass for a model (or, once model.safetensors is in, a whole one)
    return {CODEC_FILE: lambda f: save_torch(codec_package, f),
            LM_SAFETENSORS_FILE: lambda f: safetensors_save(best_state, metadata, f),
            LM_FILE: lambda f: save_torch(lm_pkg, f)}


def fp16_state(state: tp.Mapping[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
    """CPU copies of the tensors, floating ones cast to float16 (the released layout). Each copy
    owns its storage. Raises ValueError for a non-tensor or a value that is not finite in fp16."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"lm_state[{key!r}] is a {type(value).__name__}, expected a tensor")
        dtype = torch.float16 if value.is_floating_point() else value.dtype
        copied = value.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
        if copied.is_floating_point() and not bool(torch.isfinite(copied).all()):
            raise ValueError(f"lm_state[{key!r}] has values that are not finite in float16 (NaN, inf, or "
                             f"|x| > 65504): the model cannot be exported in audiocraft's fp16 layout")
        out[key] = copied
    return out


def check_lm_state(state: tp.Mapping[str, torch.Tensor], xp_cfg: dict) -> None:
    """The state must be exactly the LM that xp_cfg describes (strict keys and shapes)."""
    if TEXT_PROJ_KEY not in state:
        raise ValueError(f"lm_state has no {TEXT_PROJ_KEY}: pass MagnetLM.state_dict()")
    text_dim = int(state[TEXT_PROJ_KEY].shape[1])
    model = MagnetLM.empty(lm_config_from_xp(xp_cfg, text_dim=text_dim))
    text_config_from_xp(xp_cfg, text_dim=text_dim)  # the text section must parse too
    check_state_dict(model, state, "lm_state")


def _check_codec_package(pkg: tp.Any) -> None:
    if not isinstance(pkg, dict) or not ("pretrained" in pkg or {"best_state", "xp.cfg"} <= set(pkg)):
        raise ValueError("codec_package must be a compression_state_dict.bin dict ('best_state' and 'xp.cfg', or "
                         "'pretrained'): use the package returned by checkpoint.resolve_codec")


# ------------------------------------------------------------------------------------------------
# Resolving a codec for training
# ------------------------------------------------------------------------------------------------
def resolve_codec(spec: tp.Union[str, os.PathLike], device: tp.Union[str, torch.device] = "cpu"):
    """(codec, package) for a training run's `--codec`: a directory holding `compression_state_dict.bin`,
    that file, the hub id of a MAGNeT repo (its `compression_state_dict.bin`), or the hub id of a
    Hugging Face EnCodec such as `facebook/encodec_32khz`. The codec is float32, in eval mode and
    frozen; the package is what an export writes as `compression_state_dict.bin`: the file's own dict,
    or `{'pretrained': spec, 'exported': True, 'version': ...}` for a Hugging Face EnCodec."""
    device = torch.device(device)
    name = str(spec)
    path = Path(name).expanduser()
    if path.exists() or _is_path_like(name) or name in BUNDLED_MODELS:  # a bundled model's codec too
        return _codec_from_file(resolve_file(spec, CODEC_FILE), device)
    check_hub_id(name)
    try:
        file = _hub_file(name, CODEC_FILE)
    except Exception as exc:  # no such file in the repo, no such repo, offline: try an HF EnCodec
        return _hf_codec(name, device, exc)
    return _codec_from_file(file, device)


def _codec_from_file(path: Path, device: torch.device):
    pkg = load_package(path)
    codec = codec_from_package(pkg, str(path), device)
    return codec.float().eval().requires_grad_(False), pkg


def _hf_codec(name: str, device: torch.device, hub_error: BaseException):
    try:
        codec = HFEncodec.from_pretrained(name, device=device, local_files_only=cache_only(name))
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a missing/foreign repo
        unreachable = hub_unreachable()
        if unreachable is not None:
            why = (f"the Hugging Face hub cannot be reached ({unreachable}) and its cache holds neither its "
                   f"{CODEC_FILE} nor a Hugging Face EnCodec of that name ({OFFLINE_HINT})")
        else:
            why = (f"the hub has neither its {CODEC_FILE} ({_hub_reason(hub_error)}) nor a Hugging Face EnCodec "
                   f"of that name ({type(exc).__name__}: {_first_line(exc)})")
        raise CheckpointError(
            f"cannot find codec {name!r}: it is not a local file or directory, and {why}. Pass a directory "
            f"holding {CODEC_FILE}, that file, a MAGNeT hub id or an EnCodec hub id such as "
            f"facebook/encodec_32khz") from None
    pkg = {"pretrained": name, "exported": True, "version": AUDIOCRAFT_FORMAT_VERSION}
    return codec.float().eval().requires_grad_(False), pkg


__all__ = ["CheckpointError", "check_hub_id", "resolve_file", "resolve_codec", "load_package", "parse_xp_cfg",
           "check_state_dict", "load_strict", "lm_from_package", "codec_from_package", "LM_FILE", "CODEC_FILE",
           "LM_SAFETENSORS_FILE", "CODEC_HF_FILE", "AUDIOCRAFT_FORMAT_VERSION", "read_safetensors", "dump_yaml",
           "export_model", "audiocraft_writers", "fp16_state"]
