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
import shutil
import tempfile
import typing as tp
from pathlib import Path

import torch
from transformers import EncodecFeatureExtractor

from ..api import MAGNeT
from ..codec import HFEncodec
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
                          text_encoder_kind=model.text_config.kind, text_encoder_name=model.text_config.name,
                          audiocraft=audiocraft, architectures=["MagnetForConditionalGeneration"],
                          dtype=str(model.lm.dtype).replace("torch.", ""))
    with torch.device("meta"):  # nothing is made: the parts are the model's own
        converted = MagnetForConditionalGeneration(config, parts=(encoder, codec_module, model.lm))
    converted.generation_config = generation_config_for(model.params, model.cfg.seq_len,
                                                        conditioner.tokenizer.pad_token_id)
    extractor = EncodecFeatureExtractor(feature_size=model.audio_channels, sampling_rate=model.sample_rate,
                                        padding_value=0.0)
    processor = MagnetProcessor(extractor, conditioner.tokenizer, max_text_tokens=conditioner.max_tokens)
    return converted.eval(), processor


def save_transformers(model: MAGNeT, directory: PathLike) -> Path:
    """Write `model` in the transformers layout into `directory`, which must not exist or be empty: everything is
    written into a temporary folder beside it first, then renamed into place (a failure leaves nothing)."""
    out = Path(directory).expanduser()
    check_new_folder(out)
    converted, processor = from_magnet(model)
    with new_folder(out) as tmp:
        converted.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(out.name, converted.config), encoding="utf-8")
    return out


def check_new_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not an empty folder: give a new folder (nothing is "
                         f"overwritten)")


class new_folder:
    """`with new_folder(out) as tmp:` write into tmp (a fresh folder beside `out`); on success tmp becomes `out`
    (absent or empty before), on failure it is removed."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        check_new_folder(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        return self.tmp

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            if self.out.is_dir():
                self.out.rmdir()  # empty (checked): the rename below needs it gone
            os.rename(self.tmp, self.out)
        except OSError:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise


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


__all__ = ["from_magnet", "save_transformers", "check_new_folder", "new_folder", "model_card"]
