"""Exporting a trained MAGNeT in audiocraft 1.3.0's checkpoint layout (SPEC §7; audiocraft utils/export.py).

An exported model directory holds

    state_dict.bin              {'best_state': LM tensors in fp16, 'xp.cfg': YAML, 'version': '1.3.0',
                                 'exported': True, 'openmagnet_version': ...}
    compression_state_dict.bin  the codec package (see checkpoint.resolve_codec)
    model.safetensors           the same fp16 LM tensors, with the xp.cfg YAML in its metadata

and loads with `openmagnet.MAGNeT.get_pretrained(dir)` and with audiocraft's `MAGNeT.get_pretrained(dir)`.
audiocraft's loader reads only `xp.cfg` and `best_state`, so the extra `openmagnet_version` key is
ignored there. Every file loads with `torch.load(weights_only=True)`. The writers live in the inference
room (`checkpoint.export_model`, `checkpoint.with_generation`, `files.write_all_atomically`), which
`MAGNeT.save_pretrained(layout='audiocraft')` shares; this module adds what only a training run knows.

`build_xp_cfg` writes the experiment config from which audiocraft's `load_lm_model_magnet`,
`builders.get_lm_model` and `builders.get_conditioner_provider` rebuild exactly our LM: the sections a
released MAGNeT xp.cfg has, with every architecture flag set to what `openmagnet.lm.MagnetLM` implements.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing as tp
from pathlib import Path

from .._version import __version__
from ..checkpoint import (AUDIOCRAFT_FORMAT_VERSION, CODEC_FILE, CODEC_SAFETENSORS_FILE, LM_FILE, LM_SAFETENSORS_FILE,
                          export_model, fp16_state, load_package, parse_xp_cfg, resolve_file, with_generation)
from ..config import LMConfig, TextConfig, lm_config_from_xp, text_config_from_xp
from ..files import safetensors_save, write_all_atomically

TASKS = ("music", "sound")
SOLVERS = {"music": "magnet", "sound": "audio_magnet"}
# The T5 names audiocraft's T5Conditioner accepts, with the width it assumes for each.
T5_DIMS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
           "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
           "google/flan-t5-3b": 1024, "google/flan-t5-11b": 1024}
# transformer_lm settings fixed by openmagnet's MagnetLM (pre-norm, bias-free, sinusoidal positions,
# GELU, non-causal, no layer scale); memory_efficient makes audiocraft's loader use the attention
# backend that honours MAGNeT's restricted masks.
FIXED_LM_FLAGS: tp.Dict[str, tp.Any] = {
    "q_modeling": "parallel", "activation": "gelu", "norm": "layer_norm", "norm_first": True,
    "bias_ff": False, "bias_attn": False, "bias_proj": False, "past_context": None, "causal": False,
    "custom": False, "memory_efficient": True, "attention_as_float32": False, "layer_scale": None,
    "positional_embedding": "sin", "xpos": False, "cross_attention": False,  # audiocraft turns it on (fuser)
    "qk_layer_norm": False, "qk_layer_norm_cross": False, "kv_repeat": 1,
}
# Training-only transformer_lm settings, written when the base config has none.
DEFAULT_LM_TRAINING: tp.Dict[str, tp.Any] = {
    "dropout": 0.0, "emb_lr": None, "checkpointing": "none", "weight_init": "gaussian",
    "depthwise_init": "current", "zero_bias_init": True, "attention_dropout": None, "two_step_cfg": False,
}
# MAGNeT.set_generation_params defaults, recorded for documentation (audio-MAGNeT's yaml differs).
GENERATE_DEFAULTS: tp.Dict[str, tp.Dict[str, tp.Any]] = {
    "music": {"use_sampling": True, "temp": 3.0, "top_k": 0, "top_p": 0.9, "max_cfg_coef": 10.0,
              "min_cfg_coef": 1.0, "decoding_steps": [20, 10, 10, 10], "anneal_temp": True,
              "span_scoring": "max", "span_arrangement": "nonoverlap"},
    "sound": {"use_sampling": True, "temp": 3.5, "top_k": 0, "top_p": 0.8, "max_cfg_coef": 20.0,
              "min_cfg_coef": 1.0, "decoding_steps": [20, 10, 10, 10], "anneal_temp": True,
              "span_scoring": "max", "span_arrangement": "nonoverlap"},
}


# ------------------------------------------------------------------------------------------------
# xp.cfg
# ------------------------------------------------------------------------------------------------
def build_xp_cfg(lm_cfg: LMConfig, text_cfg: TextConfig, *, task: str, sample_rate: int, codec_checkpoint: str,
                 cfg_dropout: float, word_dropout: float, base: tp.Optional[dict] = None,
                 extra: tp.Optional[dict] = None) -> dict:
    """The xp.cfg dict of an exported LM. Starts from a deep copy of `base` (the xp.cfg of the
    checkpoint fine-tuned from) when given, overwrites everything the arguments determine, fills
    the remaining sections of a released MAGNeT config where absent, then deep-merges `extra`.
    Raises ValueError if the result would not rebuild `lm_cfg` / `text_cfg`."""
    _check_args(text_cfg, task, sample_rate, cfg_dropout, word_dropout)
    if not float(lm_cfg.segment_duration).is_integer():
        raise ValueError(f"segment_duration {lm_cfg.segment_duration} s is not a whole number of seconds, which "
                         f"audiocraft 1.3.0's MAGNeT loader cannot build attention masks for: train with whole seconds")
    cfg = copy.deepcopy(base) if base is not None else {}
    if not isinstance(cfg, dict):
        raise ValueError(f"base must be an xp.cfg dict, got {type(base).__name__}")
    cfg.setdefault("device", "cpu")
    cfg.setdefault("dtype", "float32")
    cfg.setdefault("autocast", False)
    cfg.setdefault("autocast_dtype", "float16")
    cfg.update(solver=SOLVERS[task], lm_model="transformer_lm_magnet", sample_rate=int(sample_rate),
               compression_model_checkpoint=str(codec_checkpoint))
    cfg.setdefault("channels", 1)
    cfg.setdefault("efficient_attention_backend", "xformers")
    _section(cfg, "dataset")["segment_duration"] = _plain_number(lm_cfg.segment_duration)
    guidance = _section(cfg, "classifier_free_guidance")
    guidance["training_dropout"] = float(cfg_dropout)
    guidance.setdefault("inference_coef", 3.0)
    if not isinstance(cfg.get("attribute_dropout"), dict):
        cfg["attribute_dropout"] = {}
    _set_fuser(_section(cfg, "fuser"))
    _set_text_conditioner(_section(cfg, "conditioners"), text_cfg, word_dropout)
    pattern = _section(cfg, "codebooks_pattern")
    pattern["modeling"] = "parallel"
    pattern.setdefault("parallel", {"empty_initial": -1})
    _set_transformer_lm(_section(cfg, "transformer_lm"), lm_cfg)
    _section(cfg, "masking")["span_len"] = int(lm_cfg.span_len)
    _section(_section(cfg, "generate"), "lm").update(
        {k: v for k, v in GENERATE_DEFAULTS[task].items() if k not in cfg["generate"]["lm"]})
    if extra is not None:
        _deep_merge(cfg, extra)
    _check_round_trip(cfg, lm_cfg, text_cfg)
    return cfg


def _check_args(text_cfg: TextConfig, task: str, sample_rate: int, cfg_dropout: float, word_dropout: float) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz); got {sample_rate!r}")
    for name, p in (("cfg_dropout", cfg_dropout), ("word_dropout", word_dropout)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1]; got {p!r}")
    if text_cfg.kind != "t5":
        return  # openmagnet's own text encoders: audiocraft cannot load these models anyway
    if text_cfg.name not in T5_DIMS:
        raise ValueError(f"text encoder {text_cfg.name!r} is not a T5 name audiocraft accepts "
                         f"({', '.join(T5_DIMS)}); store the hub name and load a local copy with "
                         f"MAGNeT.get_pretrained(..., text_encoder=PATH)")
    if T5_DIMS[text_cfg.name] != text_cfg.dim:
        raise ValueError(f"text encoder {text_cfg.name} has width {T5_DIMS[text_cfg.name]}, but the "
                         f"TextConfig says {text_cfg.dim}: fix TextConfig.dim")


def _section(cfg: dict, key: str) -> dict:
    """cfg[key] as a dict, created (or replacing a non-dict value) when needed."""
    if not isinstance(cfg.get(key), dict):
        cfg[key] = {}
    return cfg[key]


def _plain_number(x: float) -> tp.Union[int, float]:
    """10.0 -> 10 (as the released configs write it; audiocraft needs an int segment_duration)."""
    return int(x) if float(x).is_integer() else float(x)


def _set_fuser(fuser: dict) -> None:
    """The text condition enters through cross-attention only, without positional embedding."""
    fuser.update({"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
                  "sum": [], "prepend": [], "cross": ["description"], "input_interpolate": []})


def _set_text_conditioner(conditioners: dict, text_cfg: TextConfig, word_dropout: float) -> None:
    """Keep only `args` and the T5 `description` conditioner (the only one MagnetLM has); openmagnet's
    other encoders are written as model 'hf' (audiocraft does not know them)."""
    for key in [k for k in conditioners if k not in ("args", "description")]:
        del conditioners[key]
    description = _section(conditioners, "description")
    if text_cfg.kind != "t5":
        description.clear()
        description.update(model=text_cfg.kind, **{text_cfg.kind: {"name": text_cfg.name,
                                                                    "word_dropout": float(word_dropout)}})
        return
    old_t5 = description.get("t5") if description.get("model") == "t5" else None
    t5 = dict(old_t5) if isinstance(old_t5, dict) else {}
    t5.update(name=text_cfg.name, finetune=False, word_dropout=float(word_dropout), normalize_text=False)
    description.clear()
    description.update(model="t5", t5=t5)


def _set_transformer_lm(lm: dict, lm_cfg: LMConfig) -> None:
    lm.update(dim=lm_cfg.dim, num_heads=lm_cfg.num_heads, num_layers=lm_cfg.num_layers,
              hidden_scale=lm_cfg.hidden_scale, n_q=lm_cfg.n_q, card=lm_cfg.card)
    lm.update(FIXED_LM_FLAGS)
    for key, value in DEFAULT_LM_TRAINING.items():
        lm.setdefault(key, value)
    # audiocraft's loader overwrites the last three from the codec, `dataset` and `masking`
    lm.update(subcodes_context=lm_cfg.subcodes_context, compression_model_framerate=lm_cfg.frame_rate,
              segment_duration=_plain_number(lm_cfg.segment_duration), span_len=lm_cfg.span_len)


def _deep_merge(into: dict, extra: tp.Mapping) -> None:
    for key, value in extra.items():
        if isinstance(value, tp.Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _check_round_trip(cfg: dict, lm_cfg: LMConfig, text_cfg: TextConfig) -> None:
    """openmagnet's own xp.cfg readers must give back exactly these configs."""
    got_lm = lm_config_from_xp(cfg, text_dim=lm_cfg.text_dim)
    got_text = text_config_from_xp(cfg, text_dim=text_cfg.dim)
    names = [field.name for field in dataclasses.fields(lm_cfg)]
    diff = [f"{f}: {getattr(lm_cfg, f)!r} -> {getattr(got_lm, f)!r}" for f in names
            if getattr(lm_cfg, f) != getattr(got_lm, f)]
    if got_text != text_cfg:
        diff.append(f"text: {text_cfg!r} -> {got_text!r}")
    if diff:
        raise ValueError(f"the xp.cfg does not describe this model ({'; '.join(diff)}): these settings cannot "
                         f"be stored in audiocraft's format, or `extra` overrides them")


# ------------------------------------------------------------------------------------------------
# The bundled form (safetensors only)
# ------------------------------------------------------------------------------------------------
def bundle_model(model_dir: tp.Union[str, os.PathLike], out_dir: tp.Union[str, os.PathLike],
                 generation: tp.Optional[dict] = None) -> Path:
    """The safetensors-only form of an exported model, as models ship inside the package
    (src/openmagnet/assets/NAME): model.safetensors (the LM, fp16, xp.cfg in the metadata) and
    compression.safetensors (the full codec in fp16, its xp.cfg in the metadata; loaded back as
    float32). Pointer codecs cannot be bundled: they would need the hub. `generation`: settings to
    store with the model (set_generation_params() keywords, over any it stores already)."""
    model_dir = Path(model_dir)
    lm_pkg = load_package(resolve_file(model_dir, LM_FILE))
    codec_pkg = load_package(resolve_file(model_dir, CODEC_FILE))
    if "pretrained" in codec_pkg:
        raise ValueError(f"{model_dir}: its codec is a pointer to {codec_pkg['pretrained']!r}, which needs the hub; "
                         f"bundle a model trained with a full codec")
    meta = {"format": "pt", "version": AUDIOCRAFT_FORMAT_VERSION, "openmagnet_version": __version__}
    lm_xp = lm_pkg["xp.cfg"]
    if generation:
        import yaml

        lm_xp = yaml.safe_dump(with_generation(parse_xp_cfg(lm_xp, str(model_dir)), generation), sort_keys=False)
    lm_state, codec_state = fp16_state(lm_pkg["best_state"]), fp16_state(codec_pkg["best_state"])
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_all_atomically(out, {
        LM_SAFETENSORS_FILE: lambda f: safetensors_save(lm_state, {**meta, "xp.cfg": lm_xp}, f),
        CODEC_SAFETENSORS_FILE: lambda f: safetensors_save(codec_state, {**meta, "xp.cfg": codec_pkg["xp.cfg"]}, f),
    })
    return out


__all__ = ["build_xp_cfg", "bundle_model", "export_model", "fp16_state", "with_generation", "TASKS", "T5_DIMS"]
