"""Audio codecs that turn waveforms into MAGNeT's discrete tokens and back (SPEC §6).

- `EncodecModel`: audiocraft's EnCodec, loaded from a `compression_state_dict.bin` `best_state`.
- `HFEncodec`: the `{'pretrained': name}` form, wrapping `transformers.EncodecModel`
  (transformers is imported only by `HFEncodec.from_pretrained`).
"""
from .encodec import EncodecModel
from .hf import HFEncodec

__all__ = ["EncodecModel", "HFEncodec"]
