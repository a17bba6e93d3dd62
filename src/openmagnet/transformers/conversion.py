"""openmagnet's MAGNeT to the transformers layout (`from_magnet`, `save_transformers`); the way back is
`MagnetForConditionalGeneration.to_magnet()` then `MAGNeT.save_pretrained(layout=...)`.

Nothing is renamed: the decoder's keys are openmagnet's (audiocraft's) under `decoder.`, the codec's under
`audio_encoder.` (openmagnet's EncodecModel, or transformers' EncodecModel for a `{'pretrained': ...}` codec, whose
weights the folder then holds), the text encoder's (the T5 named by the checkpoint, or the demo's MiniLM) under
`text_encoder.`. The weights are those openmagnet loaded (float32, the LM's fp16 values exactly), so a conversion back
to audiocraft's fp16 layout gives the original tensors byte for byte.
"""
from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import torch
from transformers import EncodecFeatureExtractor

from ..api import MAGNeT
from ..codec import HFEncodec
from ..config import GenerationParams, text_config_from_xp
from ..files import check_new_folder, new_folder
from ..locate import quiet_progress_bars
from .configuration import MagnetConfig, codec_fields, lm_fields
from .modeling import MagnetForConditionalGeneration, generation_config_for
from .processing import MagnetProcessor

PathLike = tp.Union[str, os.PathLike]


def from_magnet(model: MAGNeT) -> tp.Tuple[MagnetForConditionalGeneration, MagnetProcessor]:
    """The transformers model and processor of an openmagnet MAGNeT, sharing its modules (no copy): its text
    encoder is loaded here (by the name its checkpoint gives, or `get_pretrained(text_encoder=...)`). The model
    must run unquantized (its weights are the model's)."""
    if model.lm.quantized:
        raise ValueError(f"the LM is quantized ({model.lm.quantized}): load it without quantize= to convert it")
    conditioner = model.conditioner
    encoder, codec = conditioner.encoder, model.compression_model
    codec_module = codec.model if isinstance(codec, HFEncodec) else codec
    audio_encoder = codec.model.config.to_dict() if isinstance(codec, HFEncodec) else codec_fields(codec.cfg)
    audiocraft = None
    if model.xp_cfg is not None and model.codec_cfg is not None:
        audiocraft = {"lm": {"xp.cfg": model.xp_cfg}, "compression_model": model.codec_cfg}
    config = MagnetConfig(text_encoder=encoder.config.to_dict(), audio_encoder=audio_encoder,
                          decoder={**lm_fields(model.lm.cfg), "generation": model.stored_generation},
                          text_encoder_kind=model.text_config.kind, text_encoder_name=_text_name(model),
                          audiocraft=audiocraft, architectures=["MagnetForConditionalGeneration"],
                          dtype=str(model.lm.dtype).replace("torch.", ""))
    with torch.device("meta"):  # nothing is made: the parts are the model's own
        converted = MagnetForConditionalGeneration(config, parts=(encoder, codec_module, model.lm))
    # the settings the model stores for itself over the API defaults, as MAGNeT.get_pretrained starts with (not
    # whatever set_generation_params set since: save_pretrained stores the same)
    params = GenerationParams(**(model.stored_generation or {}))
    converted.generation_config = generation_config_for(params, model.cfg.seq_len, conditioner.tokenizer.pad_token_id)
    extractor = EncodecFeatureExtractor(feature_size=model.audio_channels, sampling_rate=model.sample_rate,
                                        padding_value=0.0)
    processor = MagnetProcessor(extractor, conditioner.tokenizer, max_text_tokens=conditioner.max_tokens)
    return converted.eval(), processor


def _text_name(model: MAGNeT) -> str:
    """The text encoder's name as the checkpoint gives it (not a local folder given to get_pretrained instead)."""
    if model.xp_cfg is not None:
        return text_config_from_xp(model.xp_cfg, model.text_config.dim).name
    return model.text_config.name


def save_transformers(model: MAGNeT, directory: PathLike) -> Path:
    """Write `model` in the transformers layout into `directory`, which must not exist or be empty: everything is
    written into a temporary folder beside it first, then renamed into place (a failure leaves nothing)."""
    check_new_folder(Path(directory).expanduser())
    converted, processor = from_magnet(model)
    return save_folder(converted, processor, directory)


def save_folder(model: MagnetForConditionalGeneration, processor: MagnetProcessor, directory: PathLike) -> Path:
    """`model.save_pretrained` and `processor.save_pretrained` into a new folder (absent or empty), with a model card,
    all written before the folder takes its name."""
    out = Path(directory).expanduser()
    with new_folder(out) as tmp, quiet_progress_bars():
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(out.name, model.config), encoding="utf-8")
    return out


def model_card(name: str, config: MagnetConfig) -> str:
    lm = config.lm_config
    return f"""---
library_name: transformers
pipeline_tag: text-to-audio
tags:
- magnet
- openmagnet
- text-to-audio
---

# {name}

MAGNeT (masked non-autoregressive text-to-audio, Ziv et al. 2024) in the transformers layout written by
`openmagnet convert --to transformers`. transformers has no MAGNeT of its own: `import openmagnet.transformers`
registers it (pip install openmagnet).

- {config.sampling_rate} Hz, {config.audio_channels} channel(s), {lm.segment_duration:g} s per window
- text encoder: {config.text_encoder_name} ({config.text_encoder_kind})
- decoder: {lm.num_layers} layers, width {lm.dim}, {lm.num_heads} heads, {lm.n_q} codebooks of {lm.card} codes

```python
import openmagnet.transformers  # registers MAGNeT with transformers' Auto classes
from transformers import pipeline

synth = pipeline("text-to-audio", "{name}")
music = synth("lo-fi music with a soothing melody", forward_params={{"do_sample": True}})
```
"""


__all__ = ["from_magnet", "save_transformers", "save_folder", "quiet_progress_bars", "model_card"]
