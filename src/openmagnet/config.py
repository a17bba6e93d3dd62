"""Typed configuration of every MAGNeT component, and the one reader of audiocraft's `xp.cfg`.

Each component takes one frozen dataclass. `lm_config_from_xp`, `text_config_from_xp` and
`codec_config_from_xp` are the only code that reads audiocraft's experiment config (a YAML string
stored in `state_dict.bin` / `compression_state_dict.bin`, SPEC §7); nothing else in the package
looks at audiocraft's dictionaries. Standard library only.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import typing as tp

MASK_SPAN_ARRANGEMENTS = ("nonoverlap", "stride1")

_SHORT = reprlib.Repr()  # attributes, not keywords: Repr() takes none before Python 3.12
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 2, 60, 40, 60
_SHORT.maxtuple = _SHORT.maxlist = _SHORT.maxarray = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = \
    _SHORT.maxdeque = 8


def show(value: tp.Any) -> str:
    """repr(value) cut to at most 120 characters, for error messages about values read from files: those
    may be huge, deeply nested or built from YAML aliases (a "billion laughs" list), whose full repr
    would take hours."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # an int too long for str(), a broken __repr__
        return f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """The MAGNeT transformer (SPEC §2). Sizes of the released models are in `LM_PRESETS`."""

    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    hidden_scale: int = 4          # FFN width = hidden_scale * dim
    n_q: int = 4                   # codebooks
    card: int = 2048               # codebook size; id `card` is the mask token
    text_dim: int = 768            # width of the text encoder feeding the cross-attention projection
    subcodes_context: int = 5      # restricted self-attention window |i - j| <= 5 for codebooks >= 1
    span_len: int = 3
    frame_rate: int = 50
    segment_duration: float = 10.0  # seconds; fixes the generated length
    max_period: float = 10_000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def mask_id(self) -> int:
        return self.card

    @property
    def seq_len(self) -> int:
        """Frames generated: segment_duration * frame_rate (500 for 10 s, 1500 for 30 s)."""
        return int(self.segment_duration * self.frame_rate)


LM_PRESETS: tp.Dict[str, tp.Dict[str, int]] = {
    "small": dict(dim=1024, num_heads=16, num_layers=24),
    "medium": dict(dim=1536, num_heads=24, num_layers=48),
    "large": dict(dim=2048, num_heads=32, num_layers=48),
}


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The frozen T5 text encoder (SPEC §5). Its weights are not in the MAGNeT checkpoint."""

    name: str = "t5-base"          # hub id or local directory of the T5 model and tokenizer
    dim: int = 768                 # d_model of that encoder
    kind: str = "t5"               # t5 (audiocraft's conditioner) or hf (any transformers encoder, openmagnet only)


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """audiocraft's EnCodec: SEANet encoder/decoder + residual VQ (SPEC §6)."""

    sample_rate: int = 32000
    channels: int = 1
    dimension: int = 128
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: tp.Tuple[int, ...] = (8, 5, 4, 4)
    activation_alpha: float = 1.0  # ELU
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    pad_mode: str = "constant"
    true_skip: bool = True
    compress: int = 2
    lstm: int = 2
    n_q: int = 4
    bins: int = 2048

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@dataclasses.dataclass(frozen=True)
class GenerationParams:
    """What `MAGNeT.set_generation_params` stores (SPEC §1.2); validated on construction."""

    use_sampling: bool = True
    top_k: int = 0
    top_p: float = 0.9
    temperature: float = 3.0
    max_cfg_coef: float = 10.0
    min_cfg_coef: float = 1.0
    decoding_steps: tp.Tuple[int, ...] = (20, 10, 10, 10)
    span_arrangement: str = "nonoverlap"
    # Not in the reference (0 = audiocraft's sampler, unchanged): MaskGIT's "choice temperature". Gumbel noise
    # of this scale, annealed with the mask rate, is added to the confidence that decides which tokens are
    # re-masked, so one confident code (e.g. the codec's silence) cannot lock itself in from the first step.
    remask_noise: float = 0.0
    # Not in the reference either (False = audiocraft's audio, unchanged): the generated audio leaves without its
    # DC offset and drift below ~10 Hz (audio.remove_dc), which a small codec can add (the bundled demo model's
    # raw output sits at +0.17). The command line and the app always ask for it; the bundled model stores it.
    remove_dc: bool = False
    # Decoding that does less work (ours, all off by default: the reference's decoding). See decoding.py.
    speed: tp.Optional[str] = None  # the preset these came from (SPEED_PRESETS), for display
    guidance_every: int = 1  # the null (unconditional) rows run every k steps; the cond - null difference is reused
    fine_step_share: float = 1.0  # share of decoding_steps run for codebooks 1-3 (rounded up, at least 1)
    confidence_stop: float = 0.0  # 0: off; else a sampled token this probable is never re-masked, and a stage
    #                               ends once every token is (adaptive steps)

    def __post_init__(self):
        steps = self.decoding_steps
        if isinstance(steps, (str, bytes)) or not isinstance(steps, tp.Sequence) or len(steps) != 4 \
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in steps):
            raise ValueError(f"decoding_steps must be 4 positive integers (one per codebook), "
                             f"e.g. [20, 10, 10, 10]; got {show(steps)}")
        object.__setattr__(self, "decoding_steps", tuple(int(s) for s in steps))
        if not isinstance(self.remask_noise, (int, float)) or isinstance(self.remask_noise, bool) \
                or not 0.0 <= self.remask_noise < math.inf:
            raise ValueError(f"remask_noise must be a finite number >= 0 (0 = the reference's sampler); "
                             f"got {show(self.remask_noise)}")
        for name in ("max_cfg_coef", "min_cfg_coef", "temperature", "top_p"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number; got {show(value)}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool):
            raise ValueError(f"top_k must be an integer (0 disables top-k sampling); got {show(self.top_k)}")
        if not isinstance(self.use_sampling, bool):
            raise ValueError(f"use_sampling must be true or false; got {show(self.use_sampling)}")
        if not isinstance(self.remove_dc, bool):
            raise ValueError(f"remove_dc must be true or false; got {show(self.remove_dc)}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1] (0 disables nucleus sampling); got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables top-k sampling); got {self.top_k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        if not isinstance(self.span_arrangement, str) or self.span_arrangement not in MASK_SPAN_ARRANGEMENTS:
            raise ValueError(f"span_arrangement must be one of {', '.join(MASK_SPAN_ARRANGEMENTS)}; "
                             f"got {show(self.span_arrangement)}")
        self._check_speed()

    def _check_speed(self) -> None:
        if self.speed is not None and self.speed not in SPEED_PRESETS:
            raise ValueError(f"speed must be one of {', '.join(SPEED_PRESETS)} (or None: the reference's decoding); "
                             f"got {show(self.speed)}")
        if not isinstance(self.guidance_every, int) or isinstance(self.guidance_every, bool) \
                or not 1 <= self.guidance_every <= 1000:
            raise ValueError(f"guidance_every must be a whole number of steps from 1 (every step, the reference) to "
                             f"1000; got {show(self.guidance_every)}")
        for name in ("fine_step_share", "confidence_stop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number; got {show(value)}")
        if not 0.0 < self.fine_step_share <= 1.0:
            raise ValueError(f"fine_step_share must be in (0, 1] (1 = every step for codebooks 1-3); "
                             f"got {self.fine_step_share}")
        if not 0.0 <= self.confidence_stop < 1.0:
            raise ValueError(f"confidence_stop must be in [0, 1) (0 = off); got {self.confidence_stop}")

    @property
    def stage_steps(self) -> tp.Tuple[int, ...]:
        """The steps each codebook runs: decoding_steps, those of codebooks 1-3 scaled by fine_step_share."""
        first, *rest = self.decoding_steps
        return (first, *(max(1, math.ceil(s * self.fine_step_share - 1e-9)) for s in rest))

    @property
    def total_steps(self) -> int:
        return sum(self.stage_steps)

    @property
    def reference_decoding(self) -> bool:
        """No speed setting is on: decoding follows the reference step for step."""
        return self.guidance_every == 1 and self.fine_step_share == 1.0 and self.confidence_stop == 0.0


# Named speed settings for `set_generation_params(speed=...)`, chosen by bench/speedups.py (README, "Speed"): each
# field replaces its default unless given explicitly. 'turbo' does 48 forward-pass equivalents at the default
# steps [20, 10, 10, 10] instead of 100: the null rows every 3rd step (none where the guidance coefficient is 1)
# and half the steps for codebooks 1-3.
SPEED_PRESETS: tp.Dict[str, tp.Dict[str, tp.Any]] = {
    "turbo": dict(guidance_every=3, fine_step_share=0.5, confidence_stop=0.0),
}
SPEED_FIELDS = ("guidance_every", "fine_step_share", "confidence_stop")


def speed_settings(speed: tp.Optional[str] = None, **given: tp.Any) -> tp.Dict[str, tp.Any]:
    """GenerationParams fields for the preset `speed` (None: the reference's decoding), each of `given`
    (SPEED_FIELDS) that is not None replacing the preset's value."""
    if speed is not None and (not isinstance(speed, str) or speed not in SPEED_PRESETS):
        raise ValueError(f"speed must be one of {', '.join(SPEED_PRESETS)} (or None: the reference's decoding); "
                         f"got {show(speed)}")
    unknown = sorted(set(given) - set(SPEED_FIELDS))
    if unknown:
        raise TypeError(f"speed settings are {', '.join(SPEED_FIELDS)}; got {unknown}")
    defaults = {f.name: f.default for f in dataclasses.fields(GenerationParams) if f.name in SPEED_FIELDS}
    values = {**defaults, **SPEED_PRESETS.get(speed, {}), **{k: v for k, v in given.items() if v is not None}}
    return {"speed": speed, **values}


RELEASED_DEFAULT = "facebook/magnet-small-10secs"  # the model without --model when this copy bundles none
DEFAULT_MODEL_HELP = f"the bundled openmagnet/demo when this copy has it, else {RELEASED_DEFAULT}"


def reference_keywords(p: GenerationParams) -> tp.Dict[str, tp.Any]:
    """`p` as set_generation_params() keywords under the reference's names (temperature as 'temp'); our
    remask_noise and remove_dc only when set, the speed settings only when one is on (MAGNeT.generation_params)."""
    params = dict(use_sampling=p.use_sampling, temp=p.temperature, top_k=p.top_k, top_p=p.top_p,
                  max_cfg_coef=p.max_cfg_coef, min_cfg_coef=p.min_cfg_coef,
                  decoding_steps=list(p.decoding_steps), span_arrangement=p.span_arrangement)
    ours = dict(remask_noise=p.remask_noise, remove_dc=p.remove_dc)
    params.update({key: value for key, value in ours.items() if value})
    if not p.reference_decoding or p.speed is not None:
        params.update(speed=p.speed, **{name: getattr(p, name) for name in SPEED_FIELDS})
    return params


def generation_params(base: tp.Optional[GenerationParams] = None, **given: tp.Any) -> GenerationParams:
    """GenerationParams from set_generation_params() keywords, each given one replacing `base`'s value (None: the
    API defaults), validated once (GenerationParams): `temp` is `temperature` under the reference's name; `speed`
    is a preset (SPEED_PRESETS) whose fields any of SPEED_FIELDS given (not None) overrides, and when neither is
    given the base's speed settings stay; whole floats in decoding_steps count as integers."""
    names = {f.name for f in dataclasses.fields(GenerationParams)}
    unknown = sorted(set(given) - names - {"temp"})
    if unknown:
        raise TypeError(f"generation settings are set_generation_params() keywords {sorted(names)}; got {unknown}")
    if "temp" in given:
        temp = given.pop("temp")
        if temp is not None:
            given["temperature"] = temp
    steps = given.get("decoding_steps")
    if isinstance(steps, tp.Sequence) and not isinstance(steps, str):
        given["decoding_steps"] = tuple(int(s) if isinstance(s, float) and s.is_integer() else s for s in steps)
    if "use_sampling" in given:
        given["use_sampling"] = bool(given["use_sampling"])
    if "top_k" in given:
        given["top_k"] = int(given["top_k"])
    if "speed" in given or any(name in given for name in SPEED_FIELDS):
        given.update(speed_settings(given.pop("speed", None), **{k: given.pop(k, None) for k in SPEED_FIELDS}))
    return dataclasses.replace(base or GenerationParams(), **given)


def recommended_params(sample_rate: int, max_duration: float, **given: tp.Any) -> dict:
    """set_generation_params() keywords for a model of `sample_rate` Hz that makes `max_duration` s:
    what the audiocraft demos recommend (it differs from the API defaults): span arrangement 'stride1',
    20 first-codebook steps per 10 s of audio, and for the 16 kHz sound models temperature 3.5, top-p 0.8,
    max CFG 20; and (ours) the audio without its DC offset (remove_dc: inaudible, and a clip's offset would
    otherwise grow with its loudness normalisation). Each of `given` (set_generation_params() keywords) that
    is not None replaces its recommendation."""
    sound = sample_rate == 16000
    params = dict(use_sampling=True, top_k=0, top_p=0.8 if sound else 0.9, temperature=3.5 if sound else 3.0,
                  max_cfg_coef=20.0 if sound else 10.0, min_cfg_coef=1.0,
                  decoding_steps=[int(20 * max_duration // 10), 10, 10, 10], span_arrangement="stride1",
                  remask_noise=0.0, remove_dc=True)
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise TypeError(f"recommended_params() takes set_generation_params() keywords {sorted(params)}, got {unknown}")
    params.update({key: value for key, value in given.items() if value is not None})
    return params


# ------------------------------------------------------------------------------------------------
# audiocraft xp.cfg readers
# ------------------------------------------------------------------------------------------------
def _get(cfg: dict, path: str, default: tp.Any = None) -> tp.Any:
    node: tp.Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _number(value: tp.Any, what: str) -> tp.Union[int, float]:
    """Accept ints/floats and numeric strings; reject unresolved `${...}` interpolations clearly."""
    if isinstance(value, bool):
        raise ValueError(f"xp.cfg: {what} is a boolean, expected a number")
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"xp.cfg: {what} = {show(value)} is not a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"xp.cfg: {what} = {show(value)} is not a number") from None


def _whole(value: tp.Any, what: str, low: int, high: int) -> int:
    """A whole number in [low, high]: the bounds keep a corrupt file from building a model of 10**30 layers."""
    number = _number(value, what)
    if isinstance(number, float):
        if not number.is_integer():  # also nan and inf
            raise ValueError(f"xp.cfg: {what} = {show(value)} is not a whole number")
        number = int(number)
    if not low <= number <= high:
        raise ValueError(f"xp.cfg: {what} = {show(number)} is outside [{low}, {high}]")
    return int(number)


def _real(value: tp.Any, what: str, low: float, high: float) -> float:
    number = _number(value, what)
    try:
        number = float(number)
    except OverflowError:  # an int past float's range
        number = math.inf
    if not low <= number <= high:  # also nan
        raise ValueError(f"xp.cfg: {what} = {show(value)} is outside [{low:g}, {high:g}]")
    return number


def _section(cfg: dict, path: str) -> dict:
    """The mapping at `path` ({} when absent or null); a ValueError when it is something else."""
    node = _get(cfg, path)
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ValueError(f"xp.cfg: {path} must be a mapping, got {type(node).__name__}")
    return node


def _flag(section: dict, key: str, what: str, default: bool = False) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"xp.cfg: {what} = {show(value)} must be true or false")
    return value


def lm_config_from_xp(cfg: dict, text_dim: int) -> LMConfig:
    """Build the LM config from a MAGNeT checkpoint's xp.cfg (as audiocraft's loader patches it:
    segment_duration from `dataset`, span_len from `masking`, frame rate from the codec)."""
    lm = _get(cfg, "transformer_lm")
    if not isinstance(lm, dict):
        raise ValueError("xp.cfg has no 'transformer_lm' section: this is not a MAGNeT/MusicGen LM checkpoint")
    kind = cfg.get("lm_model", "transformer_lm_magnet")
    if kind != "transformer_lm_magnet":
        raise ValueError(f"xp.cfg says lm_model={show(kind)}; openmagnet loads MAGNeT checkpoints "
                         f"(lm_model=transformer_lm_magnet) only")
    for flag, expected in (("causal", False), ("norm_first", True), ("bias_ff", False),
                           ("bias_attn", False), ("positional_embedding", "sin")):
        got = lm.get(flag, expected)
        if got != expected:
            raise ValueError(f"xp.cfg transformer_lm.{flag}={show(got)} is not supported (MAGNeT uses {expected!r})")
    pattern = _get(cfg, "codebooks_pattern.modeling", "parallel")
    if pattern != "parallel":
        raise ValueError(f"xp.cfg codebooks_pattern.modeling={show(pattern)}: only 'parallel' (MAGNeT) is supported")
    for key in ("dim", "num_heads", "num_layers"):
        if key not in lm:
            raise ValueError(f"xp.cfg has no transformer_lm.{key}: this is not a complete MAGNeT LM config")
    seg = _get(cfg, "dataset.segment_duration", lm.get("segment_duration", 10))
    span = _get(cfg, "masking.span_len", lm.get("span_len", 3))
    dim = _whole(lm["dim"], "transformer_lm.dim", 1, 1 << 16)
    num_heads = _whole(lm["num_heads"], "transformer_lm.num_heads", 1, dim)
    if dim % num_heads:
        raise ValueError(f"xp.cfg: transformer_lm.dim {dim} is not divisible by transformer_lm.num_heads {num_heads}")
    return LMConfig(
        dim=dim,
        num_heads=num_heads,
        num_layers=_whole(lm["num_layers"], "transformer_lm.num_layers", 1, 1024),
        hidden_scale=_whole(lm.get("hidden_scale", 4), "transformer_lm.hidden_scale", 1, 64),
        n_q=_whole(lm.get("n_q", 4), "transformer_lm.n_q", 1, 64),
        card=_whole(lm.get("card", 2048), "transformer_lm.card", 1, 1 << 20),
        text_dim=text_dim,
        subcodes_context=_whole(lm.get("subcodes_context", 5), "transformer_lm.subcodes_context", 0, 1 << 20),
        span_len=_whole(span, "masking.span_len", 1, 1 << 10),
        segment_duration=_real(seg, "dataset.segment_duration", 1e-3, 3600.0),
    )


def text_config_from_xp(cfg: dict, text_dim: int) -> TextConfig:
    cond = _get(cfg, "conditioners.description")
    if not isinstance(cond, dict):
        raise ValueError("xp.cfg has no 'conditioners.description' section (the text conditioner)")
    model = cond.get("model", "t5")
    if model not in ("t5", "hf"):
        raise ValueError(f"xp.cfg conditioners.description.model={show(model)}: only T5 text conditioning "
                         f"(and openmagnet's 'hf' encoders) is supported")
    name = _get(cond, f"{model}.name", "t5-base" if model == "t5" else None)
    if name is None:
        raise ValueError("xp.cfg conditioners.description.hf has no 'name' (the text encoder)")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"xp.cfg conditioners.description.{model}.name = {show(name)} must be the text encoder's "
                         f"hub id or folder, e.g. t5-base")
    return TextConfig(name=name, dim=text_dim, kind=model)


def codec_config_from_xp(cfg: dict) -> CodecConfig:
    """Build the codec config from an audiocraft EnCodec checkpoint's xp.cfg."""
    kind = cfg.get("compression_model", "encodec")
    if kind != "encodec":
        raise ValueError(f"compression xp.cfg says compression_model={show(kind)}; only 'encodec' is supported")
    seanet, rvq, enc = _section(cfg, "seanet"), _section(cfg, "rvq"), _section(cfg, "encodec")
    if _flag(enc, "causal", "encodec.causal") or _flag(seanet, "causal", "seanet.causal"):
        raise ValueError("causal EnCodec checkpoints are not supported")
    if _flag(enc, "renormalize", "encodec.renormalize"):
        raise ValueError("EnCodec checkpoints with renormalize=true are not supported")
    if seanet.get("norm", "weight_norm") != "weight_norm":
        raise ValueError(f"EnCodec seanet.norm={show(seanet.get('norm'))}: only weight_norm is supported")
    if seanet.get("activation", "ELU") != "ELU":
        raise ValueError(f"EnCodec seanet.activation={show(seanet.get('activation'))}: only ELU is supported")
    if _whole(seanet.get("disable_norm_outer_blocks", 0), "seanet.disable_norm_outer_blocks", 0, 1 << 10) != 0:
        raise ValueError("EnCodec seanet.disable_norm_outer_blocks != 0 is not supported")
    decoder = _section(cfg, "seanet.decoder")
    if decoder.get("final_activation") is not None or \
            _real(decoder.get("trim_right_ratio", 1.0), "seanet.decoder.trim_right_ratio", 0, 1) != 1.0:
        raise ValueError("EnCodec seanet.decoder overrides (final_activation, trim_right_ratio) are not supported")
    if _section(cfg, "seanet.encoder"):
        raise ValueError(f"EnCodec seanet.encoder overrides {show(seanet['encoder'])} are not supported")
    ratios = seanet.get("ratios", (8, 5, 4, 4))
    if not isinstance(ratios, (list, tuple)) or not 1 <= len(ratios) <= 16:
        raise ValueError(f"xp.cfg: seanet.ratios = {show(ratios)} must be a list of 1 to 16 whole numbers")
    pad_mode = seanet.get("pad_mode", "constant")
    if not isinstance(pad_mode, str):
        raise ValueError(f"xp.cfg: seanet.pad_mode = {show(pad_mode)} must be a string such as 'constant'")
    activation = _section(cfg, "seanet.activation_params")
    sample_rate = _whole(cfg.get("sample_rate", enc.get("sample_rate", 32000)), "sample_rate", 1, 1 << 20)
    return CodecConfig(
        sample_rate=sample_rate,
        channels=_whole(cfg.get("channels", seanet.get("channels", 1)), "channels", 1, 64),
        dimension=_whole(seanet.get("dimension", 128), "seanet.dimension", 1, 1 << 16),
        n_filters=_whole(seanet.get("n_filters", 64), "seanet.n_filters", 1, 1 << 14),
        n_residual_layers=_whole(seanet.get("n_residual_layers", 1), "seanet.n_residual_layers", 0, 64),
        ratios=tuple(_whole(r, "seanet.ratios[]", 1, 1 << 10) for r in ratios),
        activation_alpha=_real(activation.get("alpha", 1.0), "seanet.activation_params.alpha", -1e6, 1e6),
        kernel_size=_whole(seanet.get("kernel_size", 7), "seanet.kernel_size", 1, 1 << 10),
        last_kernel_size=_whole(seanet.get("last_kernel_size", 7), "seanet.last_kernel_size", 1, 1 << 10),
        residual_kernel_size=_whole(seanet.get("residual_kernel_size", 3), "seanet.residual_kernel_size", 1, 1 << 10),
        dilation_base=_whole(seanet.get("dilation_base", 2), "seanet.dilation_base", 1, 64),
        pad_mode=pad_mode,
        true_skip=_flag(seanet, "true_skip", "seanet.true_skip", True),
        compress=_whole(seanet.get("compress", 2), "seanet.compress", 1, 64),
        lstm=_whole(seanet.get("lstm", 2), "seanet.lstm", 0, 16),
        n_q=_whole(rvq.get("n_q", 4), "rvq.n_q", 1, 64),
        bins=_whole(rvq.get("bins", 2048), "rvq.bins", 1, 1 << 20),
    )


# What `fast=True` / `--fast` / the app's Fast mode is, in the one sentence the README, the CLI and the app share.
FAST_MODE = ("the fastest kernels that keep at least 95% greedy-token agreement with exact float32, timed on "
             "this machine the first time and cached")
GENERATION_SECTION = "openmagnet.generation"  # where a model stores its own generation settings


def generation_from_xp(cfg: dict) -> tp.Optional[dict]:
    """The generation settings a model stores for itself (xp.cfg `openmagnet: generation:`, written by
    `openmagnet export --generation KEY=VALUE`), as set_generation_params() keywords; None when it
    stores none, as the released checkpoints (which keep audiocraft's API defaults)."""
    return check_generation(_get(cfg, GENERATION_SECTION), f"xp.cfg {GENERATION_SECTION}")


def check_generation(section: tp.Any, where: str) -> tp.Optional[dict]:
    """`section` (None, or set_generation_params() keywords stored `where`) checked as set_generation_params
    would check them; ValueError naming `where` otherwise."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a mapping of set_generation_params() keywords, "
                         f"got {type(section).__name__}")
    known = {f.name for f in dataclasses.fields(GenerationParams)}
    unknown = sorted(show(key) if not isinstance(key, str) else key for key in set(section) - known)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; known: {sorted(known)}")
    GenerationParams(**section)  # validated as set_generation_params would
    return dict(section)


def parse_generation_setting(text: str) -> tp.Tuple[str, tp.Any]:
    """`KEY=VALUE` from the command line (`openmagnet export --generation`), typed after the
    GenerationParams field: `temperature=1.5`, `decoding_steps=20,10,10,10`, `use_sampling=false`."""
    if "=" not in text:
        raise ValueError(f"--generation takes KEY=VALUE, e.g. temperature=1.5; got {text!r}")
    key, value = text.split("=", 1)
    defaults = GenerationParams()
    if not hasattr(defaults, key):
        known = ", ".join(f.name for f in dataclasses.fields(GenerationParams))
        raise ValueError(f"--generation {key}: unknown setting; known: {known}")
    default = getattr(defaults, key)
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError
            parsed: tp.Any = value.lower() == "true"
        elif isinstance(default, tuple):
            parsed = [int(v) for v in value.replace(",", " ").split()]
        else:
            parsed = type(default)(value)
        GenerationParams(**{key: parsed})
    except ValueError as exc:
        detail = f": {exc}" if str(exc) else f": expected a {type(default).__name__}"
        raise ValueError(f"--generation {key}={value}{detail}") from None
    return key, parsed
