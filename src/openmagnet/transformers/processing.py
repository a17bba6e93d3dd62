"""MagnetProcessor: the text tokenizer and the codec's feature extractor of a MAGNeT model (after transformers'
MusicgenProcessor).

    processor(text=["happy rock", ""])                   -> input_ids, attention_mask
    processor(text=[...], negative_text=[...])           -> also negative_input_ids, negative_attention_mask
    processor(audio=wav, sampling_rate=32000, text=...)  -> also input_values, padding_mask (a prompt to continue)

Texts are tokenized as openmagnet's conditioner tokenizes them (conditioners.tokenize): padded to the longest, cut
at `max_text_tokens`, and an empty text (or None) fully masked, which is MAGNeT's null condition (unconditional
generation). Texts and negative texts are tokenized together, padded to one length, as MAGNeT encodes them.
"""
from __future__ import annotations

import typing as tp

from transformers import BatchFeature, ProcessorMixin

from ..conditioners import MAX_TEXT_TOKENS, tokenize


class MagnetProcessor(ProcessorMixin):
    """Tokenizer (T5's, or the demo's MiniLM) + EncodecFeatureExtractor at the model's sampling rate."""

    def __init__(self, feature_extractor, tokenizer, max_text_tokens: int = MAX_TEXT_TOKENS, **kwargs):
        if isinstance(max_text_tokens, bool) or not isinstance(max_text_tokens, int) or max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be a positive integer, got {max_text_tokens!r}")
        self.max_text_tokens = max_text_tokens
        super().__init__(feature_extractor, tokenizer, **kwargs)

    def __call__(self, text: tp.Any = None, audio: tp.Any = None, sampling_rate: tp.Optional[int] = None,
                 negative_text: tp.Any = None, return_tensors: tp.Optional[str] = "pt", **kwargs: tp.Any):
        if kwargs:
            raise TypeError(f"MagnetProcessor got unknown keyword{'s' if len(kwargs) > 1 else ''} "
                            f"{', '.join(sorted(kwargs))}; it takes text, audio, sampling_rate, negative_text, "
                            f"return_tensors")
        if return_tensors not in ("pt", None):
            raise ValueError(f"MagnetProcessor returns torch tensors: return_tensors='pt', got {return_tensors!r}")
        if text is None and audio is None:
            raise ValueError("give text (a string or a list of strings; '' for unconditional), audio, or both")
        data: tp.Dict[str, tp.Any] = {}
        if text is not None:
            texts = _texts(text, "text")
            negatives = None if negative_text is None else _texts(negative_text, "negative_text")
            if negatives is not None and len(negatives) != len(texts):
                raise ValueError(f"got {len(negatives)} negative texts for {len(texts)} texts: give one (or None) each")
            tokens = tokenize(self.tokenizer, texts + (negatives or []), self.max_text_tokens)
            n = len(texts)
            data["input_ids"], data["attention_mask"] = tokens["input_ids"][:n], tokens["attention_mask"][:n]
            if negatives is not None:
                data["negative_input_ids"] = tokens["input_ids"][n:]
                data["negative_attention_mask"] = tokens["attention_mask"][n:]
        elif negative_text is not None:
            raise ValueError("negative_text needs text (one per negative text)")
        if audio is not None:
            if sampling_rate is None:
                raise ValueError(f"give the audio's sampling_rate (the model takes "
                                 f"{self.feature_extractor.sampling_rate} Hz)")
            features = self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
            data["input_values"], data["padding_mask"] = features["input_values"], features["padding_mask"]
        return BatchFeature(data=data)

    def batch_decode(self, audio: tp.Any, padding_mask: tp.Any = None) -> tp.List[tp.Any]:
        """The generated audio [B, C, L] as a list of B numpy arrays [C, L]."""
        import numpy as np

        values = audio.detach().float().cpu().numpy() if hasattr(audio, "detach") else np.asarray(audio)
        return list(values)


def _texts(value: tp.Any, what: str) -> tp.List[tp.Optional[str]]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{what} must be a string or a non-empty list of strings (None or '' for no text)")
    bad = [i for i, t in enumerate(value) if t is not None and not isinstance(t, str)]
    if bad:
        raise ValueError(f"{what}[{bad[0]}] is a {type(value[bad[0]]).__name__}, not a string")
    return list(value)


__all__ = ["MagnetProcessor"]
