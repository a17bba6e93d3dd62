"""Audio codecs that turn waveforms into MAGNeT's discrete tokens and back (SPEC §6).

- `EncodecModel`: audiocraft's EnCodec, loaded from a `compression_state_dict.bin` `best_state`.
- `HFEncodec`: the `{'pretrained': name}` form, wrapping `transformers.EncodecModel`
  (transformers is imported only by `HFEncodec.from_pretrained`).
- `decode_chunked`: codes longer than the model's window decoded one window at a time, with context.
"""
from .chunked import DECODE_CONTEXT, decode_chunked
from .encodec import EncodecModel
from .hf import HFEncodec

__all__ = ["DECODE_CONTEXT", "EncodecModel", "HFEncodec", "decode_chunked"]
