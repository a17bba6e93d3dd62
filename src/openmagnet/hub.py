"""Model folders in both layouts: `MAGNeT.save_pretrained` / `from_pretrained` / `push_to_hub`, in the hub-native
layout, or in audiocraft 1.3.0's released one (written by checkpoint.export_model).

A save_pretrained folder (layout 'hf'):

    config.json                    what rebuilds the model: the raw audiocraft xp.cfg of the LM (`lm`) and of the
                                   codec (`compression_model`, or its `pretrained` name for a pointer to a Hugging
                                   Face EnCodec), the generation settings the model stores for itself, and a
                                   summary (sample rate, window, codebooks, text encoder) checked on loading
    model.safetensors              the LM tensors in the dtypes the model holds (the xp.cfg YAML in the metadata)
    compression_model.safetensors  the codec tensors (its xp.cfg in the metadata); for a pointer codec no tensors,
                                   and `pretrained: NAME` in the metadata
    README.md                      a model card

`from_pretrained` builds the model from config.json; the xp.cfg copies in the safetensors metadata let one file be
read alone (`get_pretrained('dir/model.safetensors')`), as the files `openmagnet export` writes.

Layout 'audiocraft' is what audiocraft's `MAGNeT.get_pretrained(dir)` loads: `state_dict.bin` (the LM in fp16),
`compression_state_dict.bin` and the same fp16 LM as `model.safetensors` (see checkpoint.export_model), plus the
card. Every file loads with `torch.load(weights_only=True)` or safetensors.

Every file is written to a temporary file beside its target and fsynced; the targets are replaced only once all
are complete (files.write_all_atomically), so a failure leaves the folder as it was. huggingface_hub, safetensors
and yaml are imported by the functions that use them.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import typing as tp
from pathlib import Path

import torch

from . import __version__
from .checkpoint import (AUDIOCRAFT_FORMAT_VERSION, BUNDLED_MODELS, CODEC_FILE, CODEC_HF_FILE, LM_FILE,
                         LM_SAFETENSORS_FILE, TEXT_PROJ_KEY, CheckpointError, _hub_download, _hub_file,
                         _package_part, audiocraft_writers, check_lm_state, dump_yaml, load_package,
                         parse_xp_cfg, read_safetensors, resolve_file)
from .config import (LMConfig, TextConfig, check_generation, codec_config_from_xp, generation_from_xp,
                     lm_config_from_xp, text_config_from_xp)
from .files import safetensors_save, write_all_atomically
from .locate import missing_path
from .lm import MagnetLM

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT_VERSION = 1  # of config.json; a newer one is refused with "upgrade openmagnet"
LAYOUTS = ("hf", "audiocraft")
DEFAULT_LICENSE = "cc-by-nc-4.0"  # Meta's released MAGNeT weights, and so of what is fine-tuned from them
SCRATCH_LICENSE = "other"  # a model trained from scratch: its trainer's to choose (the card says so)


def default_license(xp_cfg: tp.Optional[dict]) -> str:
    """The model card's license when none is given: Meta's for a released checkpoint or a fine-tune (its weights
    descend from theirs), 'other' for a model openmagnet trained from scratch (xp.cfg `openmagnet: source: scratch`),
    whose license only its trainer can set."""
    section = (xp_cfg or {}).get("openmagnet")
    return SCRATCH_LICENSE if isinstance(section, dict) and section.get("source") == "scratch" else DEFAULT_LICENSE


def model_task(xp_cfg: tp.Optional[dict], sample_rate: int) -> str:
    """'music' or 'sound': what the training run said it was (openmagnet's `config: task`), else the released
    models' rule (the 16 kHz ones make sound)."""
    section = (xp_cfg or {}).get("openmagnet")
    task = section.get("config", {}).get("task") if isinstance(section, dict) and \
        isinstance(section.get("config"), dict) else None
    return task if task in ("music", "sound") else "sound" if sample_rate == 16000 else "music"
PathLike = tp.Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# Reading a model, whatever its layout
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A model's packages as checkpoint.lm_from_package / codec_from_package read them, and its configs."""
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
    xp = parse_xp_cfg(_package_part(lm_package, "xp.cfg", str(lm_path)), str(lm_path))
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
        return _hub_file(repo_id, CONFIG_FILE)
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
        return _hub_download(str(name), filename)
    if not (folder / filename).is_file():
        raise CheckpointError(f"{folder} has no {filename}: a save_pretrained folder holds {CONFIG_FILE}, "
                              f"{LM_SAFETENSORS_FILE} and {CODEC_HF_FILE}")
    return folder / filename


def _codec_cfg(package: dict, source: str) -> dict:
    if "pretrained" in package:
        return {"pretrained": str(package["pretrained"])}
    return {"xp.cfg": parse_xp_cfg(_package_part(package, "xp.cfg", source), source)}


def _generation(xp: dict, source: str) -> tp.Optional[dict]:
    try:
        return generation_from_xp(xp)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


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
# Writing
# ------------------------------------------------------------------------------------------------
def save_model(directory: PathLike, *, lm: MagnetLM, codec: torch.nn.Module, xp_cfg: tp.Optional[dict],
               codec_cfg: tp.Optional[dict], generation: tp.Optional[dict], layout: str = "hf",
               dtype: tp.Optional[torch.dtype] = None, license: tp.Optional[str] = None,
               card_id: tp.Optional[str] = None, overwrite: bool = False) -> Path:
    """Write a model in `layout` ('hf' or 'audiocraft', see the module docstring) into `directory` (created).
    dtype: the LM's floating tensors in this dtype (layout 'hf'; None keeps the model's own); layout 'audiocraft'
    is always fp16. license: the model card's (None: `default_license`). card_id: the name the card loads it by
    (default the folder's name, never the absolute path of this machine).
    A folder that holds a model already is refused unless overwrite=True (then replaced, all files or none)."""
    out = Path(directory).expanduser()
    license = default_license(xp_cfg) if license is None else license
    _check_save_args(out, lm, xp_cfg, codec_cfg, layout, dtype, license)
    held = sorted(name for name in MODEL_FILES if (out / name).is_file())
    if held and not overwrite:
        raise ValueError(f"{out} already holds a model ({', '.join(held)}): save into another folder, or pass "
                         f"overwrite=True to replace it")
    xp = with_generation(xp_cfg, generation) if generation else copy.deepcopy(xp_cfg)
    text_dim = int(lm.condition_provider.output_proj.weight.shape[1])
    lm_cfg, text_cfg = lm_config_from_xp(xp, text_dim=text_dim), text_config_from_xp(xp, text_dim=text_dim)
    summary = describe(codec.sample_rate, codec.channels, codec.frame_rate, lm_cfg, text_cfg)
    pointer = "pretrained" in codec_cfg
    codec_state = {} if pointer else _cpu_state(codec.state_dict(), None)
    card = model_card(card_id or out.resolve().name, summary, generation, license, lm_cfg,
                      model_task(xp, codec.sample_rate))
    if layout == "audiocraft":
        codec_package = ({"pretrained": codec_cfg["pretrained"]} if pointer else
                         {"best_state": codec_state, "xp.cfg": dump_yaml(codec_cfg["xp.cfg"], "the codec's xp.cfg")})
        codec_package.update(exported=True, version=AUDIOCRAFT_FORMAT_VERSION)
        writers = audiocraft_writers(lm.state_dict(), xp, codec_package)
    else:
        lm_state = _cpu_state(lm.state_dict(), dtype)
        check_lm_state(lm_state, xp)
        meta = {"format": "pt", "openmagnet_version": __version__}
        codec_meta = {**meta, "pretrained": codec_cfg["pretrained"]} if pointer else \
            {**meta, "xp.cfg": dump_yaml(codec_cfg["xp.cfg"], "the codec's xp.cfg")}
        config = {"library_name": "openmagnet", "model_type": "magnet", "format_version": FORMAT_VERSION,
                  "openmagnet_version": __version__, **summary,
                  "generation": {k: _plain(v) for k, v in generation.items()} if generation else None,
                  "lm": {"xp.cfg": xp}, "compression_model": copy.deepcopy(codec_cfg)}
        config_text = _json(config)
        lm_meta = {**meta, "xp.cfg": dump_yaml(xp, "the LM's xp.cfg")}
        writers = {LM_SAFETENSORS_FILE: lambda f: safetensors_save(lm_state, lm_meta, f),
                   CODEC_HF_FILE: lambda f: safetensors_save(codec_state, codec_meta, f),
                   CONFIG_FILE: lambda f: f.write_text(config_text, encoding="utf-8")}
    writers[CARD_FILE] = lambda f: f.write_text(card, encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    write_all_atomically(out, writers)
    return out


# what a model folder of either layout holds (a folder with any of them is a model folder)
MODEL_FILES = (CONFIG_FILE, LM_SAFETENSORS_FILE, CODEC_HF_FILE, LM_FILE, CODEC_FILE)


def _check_save_args(out: Path, lm: MagnetLM, xp_cfg: tp.Optional[dict], codec_cfg: tp.Optional[dict], layout: str,
                     dtype: tp.Optional[torch.dtype], license: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if xp_cfg is None or codec_cfg is None:
        raise ValueError("this model keeps no audiocraft xp.cfg (it was built in memory, e.g. by a training run): "
                         "export the run with `openmagnet export RUN --out DIR`, or load it with "
                         "MAGNeT.get_pretrained first")
    if lm.quantized:
        raise ValueError(f"the LM is quantized ({lm.quantized}): its int8 weights are not the model's; load it "
                         f"without quantize= to save it")
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16; got {dtype!r}")
    if layout == "audiocraft" and dtype not in (None, torch.float16):
        raise ValueError(f"layout='audiocraft' stores the LM in float16, as released: drop dtype={dtype}")
    if not isinstance(license, str) or not license.strip() or "\n" in license:
        raise ValueError(f"license must be one line naming a license (e.g. 'mit', 'cc-by-nc-4.0'); got {license!r}")
    other = out / (CONFIG_FILE if layout == "audiocraft" else LM_FILE)
    if other.is_file() and (layout == "hf" or saved_config(out) is not None):
        theirs = "hf" if layout == "audiocraft" else "audiocraft"
        raise ValueError(f"{out} holds a model in the {theirs} layout ({other.name}): save into another folder, "
                         f"or with layout={theirs!r}")


def _cpu_state(state: tp.Mapping[str, torch.Tensor], dtype: tp.Optional[torch.dtype]) -> tp.Dict[str, torch.Tensor]:
    """Contiguous CPU copies, floating tensors cast to dtype when given."""
    return {k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype,
                             copy=True).contiguous() for k, v in state.items()}


def _plain(value: tp.Any) -> tp.Any:
    """YAML- and JSON-safe: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


def _json(config: dict) -> str:
    try:
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the model's configs hold a value JSON cannot store ({exc}): save with "
                         f"layout='audiocraft'") from None
    if json.loads(text) != config:
        raise ValueError("the model's configs do not survive JSON (non-string keys?): save with layout='audiocraft'")
    return text


def model_card(card_id: str, summary: dict, generation: tp.Optional[dict], license: str, lm_cfg: LMConfig,
               task: str = "music") -> str:
    """README.md: YAML front matter for the hub, then what the model makes and how to run it."""
    text = summary["text_encoder"]
    licensing = ("\nTrained from scratch with openmagnet: its license is its trainer's to set "
                 "(`save_pretrained(..., license=...)`).\n" if license == SCRATCH_LICENSE else "")
    settings = ", ".join(f"{k}={_plain(v)}" for k, v in generation.items()) if generation else \
        "none (audiocraft's defaults; `model.recommended_params()` gives the demos' settings)"
    return f"""---
license: {license}
library_name: openmagnet
pipeline_tag: text-to-audio
tags:
- text-to-audio
- magnet
---

# {card_id}

A [MAGNeT](https://arxiv.org/abs/2401.04577) text-to-{task} model (masked, non-autoregressive), saved by
openmagnet {__version__}.

- sample rate: {summary['sample_rate']} Hz, {summary['audio_channels']} channel(s)
- window: {summary['window_seconds']:g} s per generation (longer clips are made window by window)
- text encoder: {text['name']} ({text['kind']}, width {text['dim']})
- codebooks: {summary['codebooks']} x {summary['codebook_size']} codes at {summary['frame_rate']:g} Hz
- LM: {lm_cfg.num_layers} layers, width {lm_cfg.dim}, {lm_cfg.num_heads} heads
- stored generation settings: {settings}
{licensing}
## Generate

```python
from openmagnet import MAGNeT, audio_write
model = MAGNeT.from_pretrained("{card_id}")
audio_write("out", model.generate(["happy rock"])[0].cpu(), model.sample_rate)
```
"""


def with_generation(xp_cfg: dict, generation: tp.Mapping[str, tp.Any]) -> dict:
    """A copy of xp_cfg storing `generation` (set_generation_params() keywords, checked) as the model's own
    settings (`openmagnet: generation:`, read back by config.generation_from_xp), over any it had."""
    cfg = copy.deepcopy(xp_cfg)
    if not isinstance(cfg.get("openmagnet"), dict):
        cfg["openmagnet"] = {}
    section = cfg["openmagnet"]
    section["generation"] = {**(section.get("generation") or {}), **{k: _plain(v) for k, v in generation.items()}}
    generation_from_xp(cfg)  # raises on an unknown key or a bad value
    return cfg


# ------------------------------------------------------------------------------------------------
# The hub
# ------------------------------------------------------------------------------------------------
def push_folder(write: tp.Callable[[Path], Path], repo_id: str, *, private: bool = False,
                token: tp.Optional[str] = None, commit_message: str = "Upload MAGNeT model") -> tp.Any:
    """Write the model into a temporary folder with `write(folder)`, then create the hub repo `repo_id` (kept
    if it exists) and upload the folder as one commit. Returns huggingface_hub's CommitInfo."""
    import tempfile

    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a hub repo name such as 'your-name/my-magnet'; got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="openmagnet-push-") as tmp:
        folder = write(Path(tmp) / "model")  # everything checked and written before the hub is touched
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                 repo_type="model")


__all__ = ["read_model_files", "saved_config", "save_model", "with_generation", "push_folder", "model_card",
           "ModelFiles", "CONFIG_FILE", "LAYOUTS"]
