"""Training configuration: one dataclass, the released setups as presets (SPEC §4.2), model scales.

    cfg = preset_config("magnet_32khz", model_scale="small", max_steps=1000, batch_size=8)

Every field can be overridden from the command line (`openmagnet train --set lr=3e-4`).
Standard library only.
"""
from __future__ import annotations

import dataclasses
import typing as tp
import warnings

from ..config import LM_PRESETS

# auto: fp16 on CUDA (as released); bf16 on a CPU with native bf16, else fp32 (setup.resolve_precision)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TASKS = ("music", "sound")

# Model scales: the released ones, plus `tiny` for tests and CPU experiments.
SCALES: tp.Dict[str, tp.Dict[str, int]] = {"tiny": dict(dim=128, num_heads=4, num_layers=4), **LM_PRESETS}
CUSTOM_SCALE = "custom"  # no named scale: dim, num_heads and num_layers say it all (e.g. a fine-tuned model's)
WARMUP_SHARE = 0.1  # a preset's warm-up takes at most this share of a run's steps, unless --set warmup=N


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs besides the data and the output folder."""

    task: str = "music"                 # music (descriptions from MusicInfo JSON) or sound
    sample_rate: int = 32000
    channels: int = 1
    segment_duration: float = 10.0      # seconds per training example; fixes the model's length
    min_segment_ratio: float = 0.8      # random seek in [0, duration - segment * ratio]
    model_scale: str = "small"
    dim: tp.Optional[int] = None        # overrides of the scale
    num_heads: tp.Optional[int] = None
    num_layers: tp.Optional[int] = None
    subcodes_context: int = 5
    span_len: int = 3
    codec: str = "facebook/encodec_32khz"
    text_encoder: str = "t5-base"
    # optimisation
    batch_size: int = 192               # global (split over processes)
    lr: float = 1e-4
    betas: tp.Tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    max_norm: float = 1.0
    schedule: str = "cosine"            # cosine | inverse_sqrt | constant
    warmup: int = 4000
    lr_min_ratio: float = 0.0
    max_steps: int = 1_000_000          # 500 epochs x 2000 updates in the released runs
    ema_decay: float = 0.99
    ema_every: int = 10
    precision: str = "auto"             # autocast: fp16 (CUDA, with a gradient scaler), bf16, fp32, auto
    # conditioning
    cfg_dropout: float = 0.3            # one coin per batch: the whole batch becomes unconditional
    word_dropout: float = 0.3
    merge_text_p: float = 0.25
    drop_desc_p: float = 0.5
    drop_other_p: float = 0.5
    # LoRA (rank 0 = full fine-tuning)
    lora_rank: int = 0
    lora_alpha: float = 32.0
    # bookkeeping
    seed: int = 0
    log_every: int = 10
    valid_every: int = 1000
    valid_batches: int = 8
    save_every: int = 1000
    keep_last: int = 3
    generate_every: int = 0             # 0: no sample generation during training
    sample_steps: tp.Tuple[int, int, int, int] = (20, 10, 10, 10)
    num_workers: int = 2
    token_cache: bool = False           # encode every file once (RUN_DIR/tokens), then train on token segments
    fsdp: bool = False
    dist_timeout_minutes: float = 120.0  # how long processes wait for rank 0 (token cache, validation, samples)

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        self.sample_steps = tuple(int(s) for s in self.sample_steps)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.model_scale not in SCALES and self.model_scale != CUSTOM_SCALE:
            raise ValueError(f"model scale must be one of {', '.join(SCALES)}; got {self.model_scale!r}")
        if self.model_scale == CUSTOM_SCALE and None in (self.dim, self.num_heads, self.num_layers):
            raise ValueError("model scale 'custom' needs dim, num_heads and num_layers (--set dim=N ...)")
        for name in ("batch_size", "max_steps", "log_every", "ema_every", "keep_last", "valid_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not 0 < self.segment_duration or not float(self.segment_duration).is_integer():
            raise ValueError(f"segment_duration must be a whole number of seconds (audiocraft cannot load other "
                             f"lengths); got {self.segment_duration}")
        if self.fsdp and self.lora_rank > 0:
            raise ValueError("fsdp and lora_rank cannot be combined (LoRA under FSDP is not supported): train "
                             "the adapters with DDP (drop --fsdp)")
        if not self.dist_timeout_minutes > 0:
            raise ValueError(f"dist_timeout_minutes must be > 0; got {self.dist_timeout_minutes}")
        for name in ("cfg_dropout", "word_dropout", "merge_text_p", "drop_desc_p", "drop_other_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {getattr(self, name)}")

    def architecture(self) -> tp.Dict[str, int]:
        """dim / num_heads / num_layers of the scale, with the explicit overrides applied."""
        arch = dict(SCALES.get(self.model_scale, {}))
        for name in ("dim", "num_heads", "num_layers"):
            if getattr(self, name) is not None:
                arch[name] = getattr(self, name)
        return arch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: tp.Dict[str, tp.Dict[str, tp.Any]] = {
    # config/solver/magnet/magnet_32khz.yaml with the released xp.cfg values (AdamW 1e-4) and the
    # grid's 10-s segments.
    "magnet_32khz": dict(task="music", sample_rate=32000, segment_duration=10.0, min_segment_ratio=0.8,
                         codec="facebook/encodec_32khz", text_encoder="t5-base", batch_size=192, lr=1e-4,
                         schedule="cosine", warmup=4000, max_steps=1_000_000, cfg_dropout=0.3,
                         word_dropout=0.3, merge_text_p=0.25, drop_desc_p=0.5, drop_other_p=0.5),
    # config/solver/magnet/audio_magnet_16khz.yaml: 16 kHz sound, t5-large, inverse-sqrt schedule.
    "audio_magnet_16khz": dict(task="sound", sample_rate=16000, segment_duration=10.0, min_segment_ratio=1.0,
                               codec="facebook/audio-magnet-small", text_encoder="t5-large", batch_size=128,
                               lr=5e-4, schedule="inverse_sqrt", warmup=3000, max_steps=200_000, cfg_dropout=0.1,
                               word_dropout=0.0, merge_text_p=0.0, drop_desc_p=0.0, drop_other_p=0.0),
}


def preset_config(preset: str, **overrides: tp.Any) -> TrainConfig:
    """The preset's settings with `overrides` (None: the preset's). The preset's warm-up (4000 or 3000 steps, for
    runs of 10^5-10^6 steps) is cut to WARMUP_SHARE of a shorter run's max_steps, with a warning, unless the
    overrides set warmup: a 20-step fine-tune would otherwise never leave it (its learning rate at most 5e-7)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = TrainConfig(**{**PRESETS[preset], **given})
    short = int(cfg.max_steps * WARMUP_SHARE)
    if "warmup" not in given and cfg.warmup > short:
        warnings.warn(f"the {preset} preset's warm-up of {cfg.warmup} steps is longer than a tenth of this run's "
                      f"{cfg.max_steps} steps: warming up over {short} instead (--set warmup=N to choose)",
                      UserWarning, stacklevel=2)
        cfg = dataclasses.replace(cfg, warmup=short)
    return cfg


def parse_override(text: str) -> tp.Tuple[str, tp.Any]:
    """`key=value` from the command line, the value typed after the field's type."""
    if "=" not in text:
        raise ValueError(f"--set takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if key not in fields:
        raise ValueError(f"--set {key}: unknown training setting; known: {', '.join(sorted(fields))}")
    default = getattr(TrainConfig(), key)
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return key, value.lower() in ("true", "1", "yes")
        if isinstance(default, tuple):
            return key, tuple(type(default[0])(v) for v in value.replace(",", " ").split())
        if default is None:
            return key, int(value)
        return key, type(default)(value)
    except ValueError:
        raise ValueError(f"--set {key}={value}: expected a {type(default).__name__}") from None
