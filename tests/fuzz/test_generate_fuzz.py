"""Fuzzed generation inputs (openmagnet/api.py, conditioners.py, audio.py) on the tiny music10 fixture model with
one decoding step per codebook and 0.3 s clips, so each case takes a fraction of a second: text prompts of any
kind and length, and the audio of generate_continuation / generate_infill (NaN, silence, one sample, 8
channels, integer dtypes, rates from 1 Hz to 10 MHz and beyond). Each case makes finite audio of the expected
shape, or raises one ValueError / TypeError on one line."""
import math
import warnings

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from openmagnet.conditioners import MAX_TEXT_TOKENS
from tests.fuzz.conftest import budget, check_one_line, guard, out_of_time

USER_ERRORS = (ValueError, TypeError)


def generated(audio, batch, model):
    assert audio.dim() == 3 and audio.shape[:2] == (batch, model.audio_channels), audio.shape
    assert bool(torch.isfinite(audio).all())


# ---------------------------------------------------------------------------------------------- prompts
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)  # surrogates and controls too
prompts = st.one_of(
    any_text, st.just(""), st.sampled_from([" ", "\t\n\r", "\u3000\u200b\ufeff", "\x00" * 5, "\u202e\u202d"]),
    st.text(st.sampled_from("ab \u00e9\u4e2d\u0627\U0001f3b5\u0416\u05d0\u0915"), max_size=60),  # mixed scripts
    st.builds(lambda word, n: word * n, st.sampled_from(["rock ", "\u4e2d", "\U0001f3b5", "x"]),
              st.integers(100, 3000)),  # over the encoder's limit
)


@budget(8, 2000, deadline=30)
@given(descriptions=st.lists(st.one_of(st.none(), prompts), min_size=1, max_size=3),
       negatives=st.one_of(st.none(), st.just("same")))
def test_prompts(model, descriptions, negatives):
    out_of_time("generate: prompts")
    negative = [d if d is None else d[::-1] for d in descriptions] if negatives else None
    with guard("generate: prompts"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            audio = model.generate(descriptions, negative_descriptions=negative)
        except USER_ERRORS as exc:
            check_one_line(exc, types=USER_ERRORS)
            return
    generated(audio, len(descriptions), model)
    lengths = [len(model.conditioner.tokenize([d])["input_ids"][0]) for d in descriptions + (negative or [])
               if d is not None]
    cut = [str(w.message) for w in caught if "tokens: only the first" in str(w.message)]
    assert bool(cut) == (max(lengths, default=0) >= MAX_TEXT_TOKENS) or not lengths, (lengths, cut)


@budget(5, 1000, deadline=30)
@given(bad=st.one_of(st.integers(), st.binary(max_size=4), st.lists(st.integers(), max_size=2), st.floats(),
                     st.just(object())), where=st.sampled_from(["item", "list"]))
def test_descriptions_that_are_not_text(model, bad, where):
    out_of_time("generate: non-text descriptions")
    with guard("generate: non-text descriptions"), pytest.raises(USER_ERRORS) as err:
        model.generate([bad] if where == "item" else bad)
    check_one_line(err.value, types=USER_ERRORS)


# ---------------------------------------------------------------------------------------------- audio
RATES = [1, 2, 7, 1000, 1001, 8000, 11025, 16000, 32000, 44100, 44101, 48000, 96000, 1_000_003, 9_999_991,
         10_000_000, 10 ** 12, 0, -1, 0.5, 44100.5, math.nan, math.inf, True, "32000", None]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int16, torch.int32, torch.uint8,
          torch.bool, torch.complex64]
FILLS = ["normal", "silence", "nan", "inf", "-inf", "huge", "tiny", "dc", "one nan"]


def make_audio(shape, dtype, fill, seed):
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(shape, generator=g) * 0.3
    if fill == "silence":
        wav.zero_()
    elif fill in ("nan", "inf", "-inf"):
        wav.fill_(float(fill))
    elif fill == "huge":
        wav *= 1e30
    elif fill == "tiny":
        wav *= 1e-30
    elif fill == "dc":
        wav.fill_(1.0)
    elif fill == "one nan" and wav.numel():
        wav.view(-1)[0] = math.nan
    if dtype in (torch.int16, torch.int32, torch.uint8):
        return (wav.nan_to_num().clamp(-1, 1) * 32767).to(dtype)
    return wav.to(dtype)


# half the draws usable audio (float32 noise at a usual rate), half anything
audio_cases = st.fixed_dictionaries({
    "batch": st.sampled_from([None, 1, 2]), "channels": st.sampled_from([1, 2, 8]),
    "length": st.one_of(st.integers(0, 4), st.integers(5, 9_000), st.integers(9_000, 64_000)),
    "dtype": st.one_of(st.just(torch.float32), st.sampled_from(DTYPES)),
    "fill": st.one_of(st.just("normal"), st.sampled_from(FILLS)),
    "rate": st.one_of(st.sampled_from([8000, 16000, 32000, 44100, 48000]), st.sampled_from(RATES)),
    "seed": st.integers(0, 3)})


def audio_case(**over):
    """An audio case: 0.05 s of noise, mono, float32, at 32 kHz, with `over` changed."""
    return {**dict(batch=None, channels=1, length=1600, dtype=torch.float32, fill="normal", rate=32000, seed=0), **over}


# the inputs every run tries (hypothesis' explicit examples), then the drawn ones
LISTED = [dict(fill="nan"), dict(fill="inf"), dict(fill="one nan"), dict(fill="silence"), dict(length=1),
          dict(channels=8), dict(batch=2, channels=2), dict(dtype=torch.int16), dict(rate=1, length=1),
          dict(rate=10_000_000, length=20_000), dict(rate=44101), dict(fill="huge"), dict(dtype=torch.float64)]


def listed(test):
    for one in reversed(LISTED):
        test = example(case=audio_case(**one))(test)
    return test


@budget(8, 4000, deadline=60)
@listed
@given(case=audio_cases)
def test_continuation_audio(model, case):
    out_of_time("generate: continuation audio")
    shape = (case["channels"], case["length"]) if case["batch"] is None else \
        (case["batch"], case["channels"], case["length"])
    wav = make_audio(shape, case["dtype"], case["fill"], case["seed"])
    with guard("generate: continuation audio"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse and resampling-rate warnings
        try:
            audio = model.generate_continuation(wav, case["rate"])
        except USER_ERRORS as exc:
            check_one_line(exc, types=USER_ERRORS)
            return
    generated(audio, case["batch"] or 1, model)


@budget(8, 4000, deadline=60)
@example(case=audio_case(fill="nan"), regions=[(0.01, 0.02)], inside=False, crossfade=None)
@example(case=audio_case(fill="silence"), regions=[(0.01, 0.02)], inside=False, crossfade=0.05)
@example(case=audio_case(length=1), regions=[(0.0, 1e-5)], inside=False, crossfade=None)
@example(case=audio_case(channels=8, length=32000), regions=[(0.1, 0.3), (0.5, 0.6)], inside=False, crossfade=0.01)
@example(case=audio_case(dtype=torch.int16), regions=[(0.01, 0.02)], inside=False, crossfade=None)
@example(case=audio_case(rate=1, length=3), regions=[(0.5, 1.5)], inside=False, crossfade=None)
@example(case=audio_case(rate=10_000_000, length=20_000), regions=[(0.0, 0.001)], inside=False, crossfade=None)
@example(case=audio_case(batch=2, channels=2, length=16000, rate=44101), regions=[(0.1, 0.2)], inside=False,
         crossfade=None)
@given(case=audio_cases, regions=st.lists(st.tuples(st.one_of(st.floats(-1, 12), st.just(math.nan)),
                                                   st.floats(-1, 12)), max_size=3),
       inside=st.booleans(), crossfade=st.sampled_from([None, 0, 0.05, -1, math.nan]))
def test_infill_audio(model, case, regions, inside, crossfade):
    out_of_time("generate: infill audio")
    shape = (case["channels"], case["length"]) if case["batch"] is None else \
        (case["batch"], case["channels"], case["length"])
    wav = make_audio(shape, case["dtype"], case["fill"], case["seed"])
    rate = case["rate"]
    if inside and isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < math.inf:
        # regions as fractions of the audio: ordered, apart, none covering it all
        edges = sorted(min(max(x, 0), 12) / 12 for pair in regions for x in pair if x == x) or [0.25, 0.5]
        seconds = case["length"] / rate
        pairs = zip(edges[::2], edges[1::2], strict=False)  # an odd last edge is dropped
        regions = [(seconds * a, seconds * b) for a, b in pairs if 0 < b - a < 0.9] or [(seconds * 0.25, seconds * 0.5)]
    with guard("generate: infill audio"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            audio = model.generate_infill(wav, rate, regions, crossfade=crossfade)
        except USER_ERRORS as exc:
            check_one_line(exc, types=USER_ERRORS)
            return
    generated(audio, case["batch"] or 1, model)
