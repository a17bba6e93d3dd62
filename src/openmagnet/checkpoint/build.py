"""Building the models from their packages, strictly (strict.py): the LM on the meta device with the checkpoint's
tensors assigned (cast to the chosen dtype on the way, so a fp16 file never costs more than one full-precision copy
of the weights), the codec (audiocraft's EnCodec, or the Hugging Face EnCodec a pointer names), a training run's
frozen codec (`resolve_codec`), and a whole model (`load_model`, what MAGNeT.get_pretrained runs)."""
from __future__ import annotations

import dataclasses
import os
import typing as tp
from pathlib import Path

import torch

from ..codec.encodec import EncodecModel
from ..codec.hf import HFEncodec
from ..config import CodecConfig, LMConfig, TextConfig, codec_config_from_xp, lm_config_from_xp, show, \
    text_config_from_xp
from ..lm import MagnetLM
from ..locate import BUNDLED_MODELS, OFFLINE_HINT, cache_only, hub_unreachable, is_path_like, offline_mode
from ..quantize import cast_float_matrices, quantize_lm
from ..runtime import FastMode, apply_fast_mode, compile_lm, fast_mode, int8_kernel_choice
from .find import check_hub_id, hub_file, hub_reason, resolve_file
from .layout import AUDIOCRAFT_FORMAT_VERSION, CODEC_FILE, TEXT_PROJ_KEY, CheckpointError, first_line
from .read import load_package, package_part, parse_xp_cfg, read_model_files
from .strict import load_strict

PathLike = tp.Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# The two models
# ------------------------------------------------------------------------------------------------
def lm_from_package(pkg: dict, source: str, device: torch.device, dtype: torch.dtype):
    """(MagnetLM, LMConfig, TextConfig) from a loaded `state_dict.bin`."""
    state = package_part(pkg, "best_state", source)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a raw solver checkpoint rather than an export
    if not isinstance(state, dict) or TEXT_PROJ_KEY not in state:
        raise CheckpointError(f"{source}: 'best_state' has no {TEXT_PROJ_KEY}; not a MAGNeT LM checkpoint")
    proj = state[TEXT_PROJ_KEY]
    if not isinstance(proj, torch.Tensor) or proj.dim() != 2 or not 1 <= proj.shape[1] <= 1 << 16:
        raise CheckpointError(f"{source}: {TEXT_PROJ_KEY} is not a [dim, text_dim] matrix "
                              f"({show(getattr(proj, 'shape', proj))}); the file is corrupt")
    xp = parse_xp_cfg(package_part(pkg, "xp.cfg", source), source)
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
    state = package_part(pkg, "best_state", source)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'best_state' is a {type(state).__name__}, not a dict of tensors")
    xp = parse_xp_cfg(package_part(pkg, "xp.cfg", source), source)
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
            f"{source}: cannot load the Hugging Face EnCodec {name!r} it points to ({hub_reason(exc)}); run once "
            f"where the hub can be reached ({OFFLINE_HINT} afterwards), or point HF_HUB_CACHE at a cache that holds it"
        ) from None


# ------------------------------------------------------------------------------------------------
# A whole model
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoadedModel:
    """A model as `load_model` built it: `parts()` are MAGNeT's constructor arguments."""
    name: str
    lm: MagnetLM
    text: TextConfig
    compression_model: tp.Any
    generation: tp.Optional[dict]   # the settings the model stores for itself
    xp_cfg: dict                    # the audiocraft configs as loaded, which save_pretrained writes back
    codec_cfg: dict
    fast_mode: tp.Optional[FastMode]  # what fast mode chose, and why (None outside fast mode)

    def parts(self) -> dict:
        return dict(name=self.name, lm=self.lm, text=self.text, compression_model=self.compression_model,
                    generation=self.generation, xp_cfg=self.xp_cfg, codec_cfg=self.codec_cfg)


def load_model(name: PathLike, *, device: torch.device, dtype: torch.dtype, codec_device: torch.device,
               codec: tp.Optional[PathLike] = None, text_encoder: tp.Optional[PathLike] = None,
               quantize: tp.Optional[str] = None, mode: tp.Optional[FastMode] = None, measure: bool = False,
               fast_recheck: bool = False, banded_attention: tp.Optional[bool] = None,
               compile: bool = False) -> LoadedModel:
    """Read a model named by hub id, folder (either layout), bundled name or LM file (read_model_files; `codec`
    names another codec), and build it as the device policy decided (MAGNeT.get_pretrained checks and decides
    every argument): the LM on `device` with its float matrices in `dtype`, quantized (`quantize`), or, with
    `measure`, in the fast mode timed on its own shapes (runtime.fast_mode; `fast_recheck` times again), else in
    the fast `mode` given; banded attention as given (None: on for the CPU modes that are not exact float32); its
    layers compiled (`compile`); the codec on `codec_device`, in float32. The codec must have the LM's frame rate,
    and a save_pretrained config.json's summary must describe what was built. `text_encoder` replaces the T5 the
    checkpoint names (loaded on the first generation)."""
    files = read_model_files(name, codec)
    # quantization (and fast mode's measurement) starts from float32 matrices; the float ones then take `dtype`
    load_dtype = torch.float32 if quantize is not None or measure else dtype
    lm, _, text_cfg = lm_from_package(files.lm_package, files.lm_source, device, load_dtype)
    if measure:
        mode = fast_mode(device, lm, recheck=fast_recheck)
        apply_fast_mode(lm, mode)
    elif quantize is not None:
        cast_float_matrices(quantize_lm(lm, quantize, engine=int8_kernel_choice(lm)), dtype)
    if banded_attention is None:  # measured on CPU only; elsewhere the dense mask unless asked
        banded_attention = device.type == "cpu" and (dtype != torch.float32 or quantize is not None)
    lm.banded_attention = bool(banded_attention)
    if compile:
        compile_lm(lm, mode="reduce-overhead" if device.type == "cuda" else None)
    compression_model = codec_from_package(files.codec_package, files.codec_source, codec_device)
    if abs(float(compression_model.frame_rate) - lm.cfg.frame_rate) > 1e-6:
        raise ValueError(f"codec frame rate {compression_model.frame_rate} Hz does not match the LM's "
                         f"{lm.cfg.frame_rate} Hz")
    if files.summary is not None and codec is None:
        check_summary(files.summary, describe(compression_model.sample_rate, compression_model.channels,
                                              compression_model.frame_rate, lm.cfg, text_cfg))
    if text_encoder is not None:
        text_cfg = dataclasses.replace(text_cfg, name=str(text_encoder))
    return LoadedModel(str(name), lm, text_cfg, compression_model, files.generation, files.xp_cfg, files.codec_cfg,
                       mode)


def describe(sample_rate: int, channels: int, frame_rate: float, lm_cfg: LMConfig, text_cfg: TextConfig) -> dict:
    """The summary config.json keeps beside the xp.cfgs (for people and the hub's widgets)."""
    return {"sample_rate": int(sample_rate), "audio_channels": int(channels), "frame_rate": float(frame_rate),
            "window_seconds": float(lm_cfg.segment_duration), "codebooks": lm_cfg.n_q, "codebook_size": lm_cfg.card,
            "text_encoder": {"name": text_cfg.name, "kind": text_cfg.kind, "dim": text_cfg.dim}}


def check_summary(summary: dict, described: dict) -> None:
    """config.json's summary must describe the model its xp.cfgs build (`described`, see `describe`)."""
    for key, value in described.items():
        if summary.get(key) != value:
            raise CheckpointError(f"{summary['source']}: {key} is {summary.get(key)!r}, but its lm and "
                                  f"compression_model sections build a model with {value!r}: correct {key}")


# ------------------------------------------------------------------------------------------------
# A codec for training
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
    if path.exists() or is_path_like(name) or name in BUNDLED_MODELS:  # a bundled model's codec too
        return _codec_from_file(resolve_file(spec, CODEC_FILE), device)
    check_hub_id(name)
    try:
        file = hub_file(name, CODEC_FILE)
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
        if offline_mode():
            why = (f"with offline mode on (HF_HUB_OFFLINE) the hub cache holds neither its {CODEC_FILE} "
                   f"nor a Hugging Face EnCodec of that name")
        elif unreachable is not None:
            why = (f"the Hugging Face hub cannot be reached ({unreachable}) and its cache holds neither its "
                   f"{CODEC_FILE} nor a Hugging Face EnCodec of that name ({OFFLINE_HINT})")
        else:
            why = (f"the hub has neither its {CODEC_FILE} ({hub_reason(hub_error)}) nor a Hugging Face EnCodec "
                   f"of that name ({type(exc).__name__}: {first_line(exc)})")
        raise CheckpointError(
            f"cannot find codec {name!r}: it is not a local file or directory, and {why}. Pass a directory "
            f"holding {CODEC_FILE}, that file, a MAGNeT hub id or an EnCodec hub id such as "
            f"facebook/encodec_32khz") from None
    pkg = {"pretrained": name, "exported": True, "version": AUDIOCRAFT_FORMAT_VERSION}
    return codec.float().eval().requires_grad_(False), pkg


__all__ = ["lm_from_package", "codec_from_package", "LoadedModel", "load_model", "describe", "check_summary",
           "resolve_codec"]
