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
import typing as tp
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .codec.encodec import EncodecModel
from .codec.hf import HFEncodec
from .config import CodecConfig, codec_config_from_xp, generation_from_xp, lm_config_from_xp, text_config_from_xp
from .files import safetensors_save, torch_save, write_all_atomically
from .lm import MagnetLM

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
LM_SAFETENSORS_FILE = "model.safetensors"  # the same LM tensors, xp.cfg in the metadata (hub.export_model)
CODEC_HF_FILE = "compression_model.safetensors"  # the codec of a save_pretrained directory (hub.py)
CODEC_SAFETENSORS_FILE = "compression.safetensors"  # a full codec the same way (the bundled models)
# what a directory may hold instead of each audiocraft file, in the order looked for
SAFETENSORS_FORMS = {LM_FILE: (LM_SAFETENSORS_FILE,), CODEC_FILE: (CODEC_HF_FILE, CODEC_SAFETENSORS_FILE)}
# Models that ship inside the package (safetensors under src/openmagnet/assets/), by name.
BUNDLED_MODELS = {"openmagnet/demo": "demo"}


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


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or loaded; the message says what to do."""


# ------------------------------------------------------------------------------------------------
# Finding files
# ------------------------------------------------------------------------------------------------
def resolve_file(name_or_path: tp.Union[str, os.PathLike], filename: str) -> Path:
    """A checkpoint file from a file path, a directory holding `filename` (or its safetensors form),
    a bundled model name (`openmagnet/demo`), or a hub repo id."""
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
    if _is_path_like(name):
        raise CheckpointError(f"{name}: no such file or directory")
    return _hub_download(name, filename)


def _is_path_like(name: str) -> bool:
    """True for names that can only be local paths (never a hub id `owner/repo`)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or \
        name.endswith((".bin", ".pt", ".safetensors"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _hub_reason(exc: BaseException) -> str:
    return "offline mode is on (HF_HUB_OFFLINE)" if _offline() else f"{type(exc).__name__}: {_first_line(exc)}"


def _hub_file(repo_id: str, filename: str) -> Path:
    """hf_hub_download, raising the hub's own exception on failure."""
    from huggingface_hub import hf_hub_download  # imported on first download only

    return Path(hf_hub_download(repo_id=repo_id, filename=filename, library_name="openmagnet"))


def _hub_download(repo_id: str, filename: str) -> Path:
    try:
        return _hub_file(repo_id, filename)
    except Exception as exc:  # the hub raises many types: offline, missing repo, network, auth
        why = _hub_reason(exc)
        raise CheckpointError(
            f"cannot get {filename} of {repo_id!r} from the Hugging Face hub ({why}). "
            f"Download it on a machine with network access, or pass a local directory that holds "
            f"{LM_FILE} and {CODEC_FILE}: MAGNeT.get_pretrained('/path/to/dir')") from None


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
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read this checkpoint, it is truncated or corrupt "
                              f"({type(exc).__name__}: {_first_line(exc)}); delete it and download it again") from None
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(pkg).__name__}")
    return pkg


def read_safetensors(path: tp.Union[str, os.PathLike]) -> tp.Tuple[tp.Dict[str, torch.Tensor], tp.Dict[str, str]]:
    """(tensors, metadata) of a safetensors file, on the CPU; a corrupt or truncated file gets a clear error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read this safetensors file, it is truncated or corrupt "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
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
    plain values that openmagnet needs are read from it."""
    import yaml

    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise CheckpointError(f"{source}: 'xp.cfg' is a {type(text).__name__}, expected a YAML string")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{source}: 'xp.cfg' is not valid YAML ({_first_line(exc)})") from None
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


def _package_part(pkg: dict, key: str, source: str) -> tp.Any:
    if key not in pkg:
        raise CheckpointError(f"{source}: no {key!r} entry (keys: {', '.join(map(str, pkg))}); "
                              f"is this an audiocraft-exported MAGNeT file?")
    return pkg[key]


# ------------------------------------------------------------------------------------------------
# Strict loading
# ------------------------------------------------------------------------------------------------
def check_state_dict(module: nn.Module, state: tp.Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    for k in sorted(set(expected) & set(state)):
        if not isinstance(state[k], torch.Tensor):
            problems.append(f"{k} is a {type(state[k]).__name__}, not a tensor")
        elif tuple(state[k].shape) != expected[k]:
            problems.append(f"{k} has shape {list(state[k].shape)}, expected {list(expected[k])}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_strict(module: nn.Module, state: tp.Mapping[str, torch.Tensor], source: str,
                device: torch.device,
                dtype: tp.Union[None, torch.dtype, tp.Callable[[str], torch.dtype]]) -> nn.Module:
    """Assign checkpoint tensors to a (meta-device) module, casting floating tensors to `dtype`
    (one dtype, or a function of the key). Each tensor is converted once and the converted copy
    is what the module keeps."""
    check_state_dict(module, state, source)
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
    xp = parse_xp_cfg(_package_part(pkg, "xp.cfg", source), source)
    text_dim = int(state[TEXT_PROJ_KEY].shape[1])
    try:
        lm_cfg = lm_config_from_xp(xp, text_dim=text_dim)
        text_cfg = text_config_from_xp(xp, text_dim=text_dim)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    lm = MagnetLM.empty(lm_cfg)
    load_strict(lm, state, source, device, lambda key: MagnetLM.weight_dtype(key, dtype))
    return lm.eval().requires_grad_(False), lm_cfg, text_cfg


def codec_from_package(pkg: dict, source: str, device: torch.device):
    """The codec from a loaded `compression_state_dict.bin`: the full audiocraft EnCodec, or the
    `{'pretrained': name}` pointer resolved through transformers' EncodecModel. Always float32."""
    if "pretrained" in pkg:
        return HFEncodec.from_pretrained(str(pkg["pretrained"]), device=device)
    state = _package_part(pkg, "best_state", source)
    xp = parse_xp_cfg(_package_part(pkg, "xp.cfg", source), source)
    try:
        cfg: CodecConfig = codec_config_from_xp(xp)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    with torch.device("meta"):
        codec = EncodecModel(cfg)
    load_strict(codec, state, source, device, torch.float32)
    return codec.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------
# Writing the audiocraft layout (audiocraft utils/export.py)
# ------------------------------------------------------------------------------------------------
def export_model(out_dir: tp.Union[str, os.PathLike], lm_state: tp.Mapping[str, torch.Tensor], xp_cfg: dict,
                 codec_package: dict) -> Path:
    """Write state_dict.bin, compression_state_dict.bin and model.safetensors into out_dir (created).
    lm_state: the LM's state dict (any float dtype, any device), stored in fp16; it must match the
    model xp_cfg describes. Each file is written to a temporary file in out_dir first; existing
    files are replaced only once all three are complete, so a failure leaves out_dir as it was."""
    writers = audiocraft_writers(lm_state, xp_cfg, codec_package)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_all_atomically(out, writers)
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
    return {LM_FILE: lambda f: torch_save(lm_pkg, f),
            CODEC_FILE: lambda f: torch_save(codec_package, f),
            LM_SAFETENSORS_FILE: lambda f: safetensors_save(best_state, metadata, f)}


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
    if path.exists() or _is_path_like(name):
        return _codec_from_file(resolve_file(spec, CODEC_FILE), device)
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
        codec = HFEncodec.from_pretrained(name, device=device)
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a missing/foreign repo
        if _offline():
            why = (f"with offline mode on (HF_HUB_OFFLINE) the hub cache holds neither its {CODEC_FILE} "
                   f"nor a Hugging Face EnCodec of that name")
        else:
            why = (f"the hub has neither its {CODEC_FILE} ({_hub_reason(hub_error)}) nor a Hugging Face EnCodec "
                   f"of that name ({type(exc).__name__}: {_first_line(exc)})")
        raise CheckpointError(
            f"cannot find codec {name!r}: it is not a local file or directory, and {why}. Pass a directory "
            f"holding {CODEC_FILE}, that file, a MAGNeT hub id or an EnCodec hub id such as "
            f"facebook/encodec_32khz") from None
    pkg = {"pretrained": name, "exported": True, "version": AUDIOCRAFT_FORMAT_VERSION}
    return codec.float().eval().requires_grad_(False), pkg


__all__ = ["CheckpointError", "resolve_file", "resolve_codec", "load_package", "parse_xp_cfg", "check_state_dict",
           "load_strict", "lm_from_package", "codec_from_package", "LM_FILE", "CODEC_FILE",
           "LM_SAFETENSORS_FILE", "CODEC_HF_FILE", "AUDIOCRAFT_FORMAT_VERSION", "read_safetensors", "dump_yaml",
           "export_model", "audiocraft_writers", "fp16_state"]
