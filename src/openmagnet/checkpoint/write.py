"""Writing a model, in either layout, every file atomically (files.write_all_atomically: each file to a temporary
file beside its target, fsynced; the targets replaced only once all are complete, so a failure leaves the folder as
it was).

Layout 'audiocraft' (`export_model`, `openmagnet export`, `MAGNeT.save_pretrained(layout='audiocraft')`): what
audiocraft's `MAGNeT.get_pretrained(dir)` loads (its utils/export.py): `state_dict.bin` (the LM in fp16),
`compression_state_dict.bin` and the same fp16 LM as `model.safetensors` (xp.cfg in its metadata), plus the card.

Layout 'hf' (`save_model`, `MAGNeT.save_pretrained` / `push_to_hub`):

    config.json                    what rebuilds the model: the raw audiocraft xp.cfg of the LM (`lm`) and of the
                                   codec (`compression_model`, or its `pretrained` name for a pointer to a Hugging
                                   Face EnCodec), the generation settings the model stores for itself, and a
                                   summary (sample rate, window, codebooks, text encoder) checked on loading
    model.safetensors              the LM tensors in the dtypes the model holds (the xp.cfg YAML in the metadata)
    compression_model.safetensors  the codec tensors (its xp.cfg in the metadata); for a pointer codec no tensors,
                                   and `pretrained: NAME` in the metadata
    README.md                      a model card

The xp.cfg copies in the safetensors metadata let one file be read alone (`get_pretrained('dir/model.safetensors')`).
Every file loads with `torch.load(weights_only=True)` or safetensors. huggingface_hub, safetensors and yaml are
imported by the functions that use them.
"""
from __future__ import annotations

import copy
import json
import os
import typing as tp
from pathlib import Path

import torch

from .._version import __version__
from ..config import LMConfig, generation_from_xp, lm_config_from_xp, text_config_from_xp
from ..files import safetensors_save, save_torch, write_all_atomically
from ..lm import MagnetLM
from .build import describe
from .layout import (AUDIOCRAFT_FORMAT_VERSION, CARD_FILE, CODEC_FILE, CODEC_HF_FILE, CONFIG_FILE, FORMAT_VERSION,
                     LAYOUTS, LM_FILE, LM_SAFETENSORS_FILE, MODEL_FILES, TEXT_PROJ_KEY)
from .read import dump_yaml, saved_config
from .strict import check_state_dict

DEFAULT_LICENSE = "cc-by-nc-4.0"  # Meta's released MAGNeT weights, and so of what is fine-tuned from them
SCRATCH_LICENSE = "other"  # a model trained from scratch: its trainer's to choose (the card says so)
PathLike = tp.Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# The audiocraft layout (audiocraft utils/export.py)
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
# Either layout
# ------------------------------------------------------------------------------------------------
def from_scratch(xp_cfg: tp.Optional[dict]) -> bool:
    """Whether no released weights are among the model's ancestors: openmagnet trained it from scratch (xp.cfg
    `openmagnet: source: scratch`), or fine-tuned a model that was (`lineage: scratch`, written by the export)."""
    section = (xp_cfg or {}).get("openmagnet")
    return isinstance(section, dict) and "scratch" in (section.get("source"), section.get("lineage"))


def default_license(xp_cfg: tp.Optional[dict]) -> str:
    """The model card's license when none is given: Meta's for a released checkpoint or a fine-tune of one (its
    weights descend from theirs), 'other' for a model openmagnet trained from scratch or a fine-tune of such a model
    (`from_scratch`), whose license only its trainer can set."""
    return SCRATCH_LICENSE if from_scratch(xp_cfg) else DEFAULT_LICENSE


def model_task(xp_cfg: tp.Optional[dict], sample_rate: int) -> str:
    """'music' or 'sound': what the training run said it was (openmagnet's `config: task`), else the released
    models' rule (the 16 kHz ones make sound)."""
    section = (xp_cfg or {}).get("openmagnet")
    task = section.get("config", {}).get("task") if isinstance(section, dict) and \
        isinstance(section.get("config"), dict) else None
    return task if task in ("music", "sound") else "sound" if sample_rate == 16000 else "music"


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


def push_model(repo_id: str, *, private: bool = False, token: tp.Optional[str] = None,
               commit_message: str = "Upload MAGNeT model", **saved: tp.Any) -> tp.Any:
    """`save_model(folder, **saved)` into a temporary folder (the card names `repo_id`), then `push_folder`."""
    return push_folder(lambda folder: save_model(folder, **saved, card_id=repo_id), repo_id, private=private,
                       token=token, commit_message=commit_message)


__all__ = ["export_model", "audiocraft_writers", "fp16_state", "check_lm_state", "save_model", "with_generation",
           "model_card", "default_license", "from_scratch", "model_task", "push_folder", "push_model",
           "DEFAULT_LICENSE", "SCRATCH_LICENSE"]
