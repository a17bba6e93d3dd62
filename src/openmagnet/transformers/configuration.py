"""MagnetConfig: a MAGNeT model as a transformers configuration (`model_type="magnet"`), after transformers'
MusicgenConfig: one config holding the text encoder's, the audio codec's and the decoder's.

    text_encoder   the transformers config of the frozen text encoder (T5Config for the released models, the
                   demo's BertConfig), as a dict with its `model_type`; `text_encoder_kind` says how openmagnet
                   runs it ('t5': T5EncoderModel, 'hf': AutoModel) and `text_encoder_name` is the name the
                   audiocraft config gives it (t5-base, t5-large, all-MiniLM-L6-v2)
    audio_encoder  transformers' own EncodecConfig (`model_type` 'encodec') where the codec is a standard EnCodec
                   (the `{'pretrained': 'facebook/encodec_32khz'}` checkpoints); otherwise the fields of
                   openmagnet's CodecConfig with `model_type` 'audiocraft_encodec' (the released audiocraft
                   compression models, the demo's 16 kHz codec)
    decoder        the fields of openmagnet's LMConfig (layers, heads, dim, codebooks, card, span length, window),
                   the attention window of each stage, and the generation settings the model stores for itself
    audiocraft     the audiocraft configs the model came with (the LM's xp.cfg, the codec's xp.cfg or its
                   `pretrained` name), for the way back to audiocraft's layout; checked against the fields above

The sub-configs stay plain dicts in the JSON (and on the object): `text_encoder_config` builds the transformers
config, `lm_config` / `codec_config` openmagnet's dataclasses. Every inconsistency is a one-line ValueError.
"""
from __future__ import annotations

import copy
import dataclasses
import typing as tp

from transformers import AutoConfig, PretrainedConfig

from ..config import CodecConfig, LMConfig, check_generation, codec_config_from_xp, lm_config_from_xp, show

MODEL_TYPE = "magnet"
AUDIOCRAFT_CODEC = "audiocraft_encodec"  # the model_type of an audio_encoder that is openmagnet's EncodecModel
HF_CODEC = "encodec"
TEXT_KINDS = ("t5", "hf")
# the defaults: magnet-small's decoder (LMConfig()), audiocraft's 32 kHz EnCodec (CodecConfig()) and t5-base's encoder
T5_BASE = {"model_type": "t5", "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12,
           "vocab_size": 32128}


def lm_fields(cfg: LMConfig) -> dict:
    return dataclasses.asdict(cfg)


def codec_fields(cfg: CodecConfig) -> dict:
    fields = dataclasses.asdict(cfg)
    fields["ratios"] = list(fields["ratios"])
    return {"model_type": AUDIOCRAFT_CODEC, **fields}


def stage_windows(cfg: LMConfig) -> tp.List[tp.Optional[int]]:
    """The self-attention window of each stage: None (every frame) for codebook 0, +-subcodes_context after."""
    return [None] + [cfg.subcodes_context] * (cfg.n_q - 1)


class MagnetConfig(PretrainedConfig):
    """Configuration of `MagnetForConditionalGeneration` (see the module docstring for the sections)."""

    model_type = MODEL_TYPE

    def __init__(self, text_encoder: tp.Optional[dict] = None, audio_encoder: tp.Optional[dict] = None,
                 decoder: tp.Optional[dict] = None, text_encoder_kind: str = "t5",
                 text_encoder_name: str = "t5-base", audiocraft: tp.Optional[dict] = None,
                 sampling_rate: tp.Optional[int] = None, audio_channels: tp.Optional[int] = None, **kwargs):
        self.text_encoder = _plain_dict(text_encoder, "text_encoder") or dict(T5_BASE)
        self.audio_encoder = _plain_dict(audio_encoder, "audio_encoder") or codec_fields(CodecConfig())
        decoder = _plain_dict(decoder, "decoder") or {**lm_fields(LMConfig()), "generation": None}
        decoder.setdefault("generation", None)
        decoder["stage_attention_windows"] = stage_windows(_lm_config(decoder))
        self.decoder = decoder
        if text_encoder_kind not in TEXT_KINDS:
            raise ValueError(f"text_encoder_kind must be one of {', '.join(TEXT_KINDS)}; got {show(text_encoder_kind)}")
        self.text_encoder_kind = text_encoder_kind
        self.text_encoder_name = str(text_encoder_name)
        self.audiocraft = copy.deepcopy(audiocraft) if audiocraft else None
        rate, channels = self._codec_rate_and_channels()
        self.sampling_rate = rate if sampling_rate is None else sampling_rate
        self.audio_channels = channels if audio_channels is None else audio_channels
        super().__init__(**kwargs)

    # ------------------------------------------------------------------------------------------ derived views
    @property
    def lm_config(self) -> LMConfig:
        return _lm_config(self.decoder)

    @property
    def codec_config(self) -> tp.Optional[CodecConfig]:
        """openmagnet's CodecConfig of an audiocraft codec; None for transformers' EnCodec."""
        if self.audio_encoder.get("model_type") != AUDIOCRAFT_CODEC:
            return None
        fields = {k: v for k, v in self.audio_encoder.items() if k != "model_type"}
        try:
            return CodecConfig(**{**fields, "ratios": tuple(fields.get("ratios", CodecConfig.ratios))})
        except TypeError as exc:
            raise ValueError(f"audio_encoder: {exc}") from None

    @property
    def text_encoder_config(self) -> PretrainedConfig:
        return sub_config(self.text_encoder, "text_encoder")

    @property
    def stored_generation(self) -> tp.Optional[dict]:
        return self.decoder.get("generation")

    @property
    def frame_rate(self) -> float:
        return float(self.lm_config.frame_rate)

    def _codec_rate_and_channels(self) -> tp.Tuple[int, int]:
        codec = self.audio_encoder
        if codec.get("model_type") == AUDIOCRAFT_CODEC:
            cfg = self.codec_config
            return cfg.sample_rate, cfg.channels
        if codec.get("model_type") == HF_CODEC:
            return int(codec.get("sampling_rate", 24000)), int(codec.get("audio_channels", 1))
        raise ValueError(f"audio_encoder.model_type must be {HF_CODEC!r} (transformers' EncodecConfig) or "
                         f"{AUDIOCRAFT_CODEC!r} (openmagnet's codec); got {show(codec.get('model_type'))}")

    def check(self, source: str = "config") -> None:
        """Every section must describe the same model: the decoder's text width that of the text encoder, the
        codec's frame rate the decoder's, the audiocraft configs (when present) these very fields. One-line
        ValueError naming `source` otherwise."""
        try:
            self._check()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def _check(self) -> None:
        lm = self.lm_config
        text = self.text_encoder_config
        width = int(getattr(text, "d_model", None) or text.hidden_size)
        if width != lm.text_dim:
            raise ValueError(f"the text encoder is {width} wide but decoder.text_dim is {lm.text_dim}")
        rate, channels = self._codec_rate_and_channels()
        if (self.sampling_rate, self.audio_channels) != (rate, channels):
            raise ValueError(f"sampling_rate {self.sampling_rate} / audio_channels {self.audio_channels} differ from "
                             f"the audio_encoder's {rate} / {channels}")
        hop = _hop(self.audio_encoder)
        if abs(rate / hop - lm.frame_rate) > 1e-6:
            raise ValueError(f"the audio_encoder makes {rate / hop:g} frames a second but the decoder expects "
                             f"{lm.frame_rate}")
        check_generation(self.stored_generation, "decoder.generation")
        if self.audiocraft is not None:
            self._check_audiocraft(lm)

    def _check_audiocraft(self, lm: LMConfig) -> None:
        section = self.audiocraft
        if not isinstance(section, dict) or not isinstance(section.get("lm", {}).get("xp.cfg"), dict):
            raise ValueError("audiocraft must hold the LM's xp.cfg as {'lm': {'xp.cfg': {...}}, 'compression_model': "
                             "{...}}")
        from_xp = lm_config_from_xp(section["lm"]["xp.cfg"], text_dim=lm.text_dim)
        if from_xp != dataclasses.replace(lm, frame_rate=from_xp.frame_rate):
            raise ValueError(f"decoder {lm} differs from what audiocraft.lm's xp.cfg builds ({from_xp})")
        codec = section.get("compression_model")
        if not isinstance(codec, dict) or not (isinstance(codec.get("xp.cfg"), dict) or
                                               isinstance(codec.get("pretrained"), str)):
            raise ValueError("audiocraft.compression_model must hold the codec's 'xp.cfg' or its 'pretrained' name")
        if "xp.cfg" in codec and codec_config_from_xp(codec["xp.cfg"]) != self.codec_config:
            raise ValueError("audio_encoder differs from what audiocraft.compression_model's xp.cfg builds")
        if "pretrained" in codec and self.audio_encoder.get("model_type") != HF_CODEC:
            raise ValueError(f"audiocraft.compression_model points to {codec['pretrained']!r}, a transformers EnCodec, "
                             f"but audio_encoder is {self.audio_encoder.get('model_type')!r}")

    def get_text_config(self, decoder=None, encoder=None) -> "MagnetConfig":
        """This config itself: its sections are plain dicts, not the text sub-configs transformers looks for under
        the names decoder and text_encoder (generation settings live in generation_config.json)."""
        return self

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        check_model_type(config_dict, kwargs.get("name_or_path") or config_dict.get("_name_or_path") or "config.json")
        return super().from_dict(config_dict, **kwargs)


def check_model_type(config_dict: tp.Any, source: str) -> None:
    """A config.json that is not a transformers MAGNeT config: one-line ValueError saying what it is instead."""
    if not isinstance(config_dict, dict):
        raise ValueError(f"{source}: config.json must be a JSON object")
    if config_dict.get("library_name") == "openmagnet":
        raise ValueError(f"{source} is an openmagnet model folder (MAGNeT.save_pretrained), not a transformers one: "
                         f"load it with openmagnet.MAGNeT.from_pretrained, or convert it with "
                         f"`openmagnet convert --to transformers SRC DST`")
    if config_dict.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{source} holds a {show(config_dict.get('model_type'))} model, not MAGNeT "
                         f"(model_type 'magnet'): give a folder written by `openmagnet convert --to transformers`")


def sub_config(fields: dict, what: str) -> PretrainedConfig:
    """The transformers config of a sub-config dict (with its model_type)."""
    fields = dict(fields)
    model_type = fields.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValueError(f"{what} has no model_type")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def _lm_config(decoder: dict) -> LMConfig:
    known = {f.name for f in dataclasses.fields(LMConfig)}
    fields = {k: v for k, v in decoder.items() if k in known}
    extra = sorted(set(decoder) - known - {"generation", "stage_attention_windows"})
    if extra:
        raise ValueError(f"decoder has unknown fields {extra}; known: {sorted(known)}")
    try:
        return LMConfig(**fields)
    except TypeError as exc:
        raise ValueError(f"decoder: {exc}") from None


def _hop(codec: dict) -> int:
    import math

    if codec.get("model_type") == AUDIOCRAFT_CODEC:
        return math.prod(codec.get("ratios", CodecConfig.ratios))
    return math.prod(codec.get("upsampling_ratios", (8, 5, 4, 2)))


def _plain_dict(value: tp.Any, what: str) -> tp.Optional[dict]:
    if value is None:
        return None
    if isinstance(value, PretrainedConfig):
        return value.to_dict()
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    return copy.deepcopy(value)


__all__ = ["MagnetConfig", "MODEL_TYPE", "AUDIOCRAFT_CODEC", "HF_CODEC", "check_model_type", "sub_config"]
