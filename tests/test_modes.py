"""The generation modes (openmagnet/modes.py), on the fixture checkpoints and the bundled demo model.

Infill (generate_infill, generate_tokens(infill=...)) and negative prompts: kept frames keep the input's codes
exactly, regions change, greedy infill of a suffix is greedy continuation, and negative_descriptions=None changes
nothing. Long generation (model.duration > max_duration): overlapping windows, each prompted with the end of the
previous ones; the codec decodes past the window in chunks. Loops (generate(loop=True)): the seam is regenerated
with the clip's end and start as its context, the rest of the clip is kept, and the audio is one period of the
repeated clip."""
import math
import warnings
from pathlib import Path

import pytest
import torch

from openmagnet import modes
from openmagnet.audio import crossfade_regions
from openmagnet.config import GenerationParams
from openmagnet.decoding import generate_tokens
from openmagnet.modes import guided_logits_fn, infill_keep
from tests.conftest import cfg_condition, load_fixture_model

GREEDY = dict(use_sampling=False, decoding_steps=[2, 1, 1, 1])
LOOP_GREEDY = dict(**GREEDY, span_arrangement="stride1")


# ------------------------------------------------------------------------------------------ infill
DEMO = Path(__file__).resolve().parents[1] / "src" / "openmagnet" / "assets" / "demo"
INFILL_GREEDY = dict(use_sampling=False, decoding_steps=[4, 2, 2, 2])


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_greedy_infill_of_a_suffix_is_greedy_continuation(arrangement):
    """The same fixed prefix given as a prompt or as kept frames gives the same tokens (fixture music10)."""
    model, _, cond = cfg_condition("music10")
    params = GenerationParams(span_arrangement=arrangement, **INFILL_GREEDY)
    B, T = cond.shape[0] // 2, 60
    prompt = torch.randint(0, 2048, (B, 4, 25), generator=torch.Generator().manual_seed(3))
    logits_fn = guided_logits_fn(model.lm, cond, B)
    with torch.inference_mode():
        continued = generate_tokens(logits_fn, B, T, 4, 2048, params, prompt=prompt)
        given = torch.zeros(B, 4, T, dtype=torch.long)
        given[..., :25] = prompt
        keep = torch.zeros(T, dtype=torch.bool)
        keep[:25] = True
        infilled = generate_tokens(logits_fn, B, T, 4, 2048, params, infill=(given, keep))
    assert torch.equal(continued, infilled)


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_kept_frames_keep_their_codes_and_regions_change(arrangement):
    model, _, cond = cfg_condition("music10")
    B, T = cond.shape[0] // 2, 60
    given = torch.randint(0, 2048, (B, 4, T), generator=torch.Generator().manual_seed(5))
    keep = torch.ones(T, dtype=torch.bool)
    keep[12:30] = False  # a hole in the middle: context on both sides
    params = GenerationParams(span_arrangement=arrangement, **INFILL_GREEDY)
    with torch.inference_mode():
        out = generate_tokens(guided_logits_fn(model.lm, cond, B), B, T, 4, 2048, params, infill=(given, keep))
    assert out.shape == (B, 4, T) and ((out >= 0) & (out < 2048)).all()
    assert torch.equal(out[..., keep], given[..., keep])
    assert not torch.equal(out[..., ~keep], given[..., ~keep])


def test_infill_keep_widens_regions_to_whole_spans_and_checks_them():
    keep = infill_keep([(0.5, 0.61)], 2.0, 50, 3, 100)  # frames 25 .. 30.5 -> spans 24 .. 33
    assert (~keep).nonzero().flatten().tolist() == list(range(24, 33))
    keep = infill_keep([(1.9, 2.0), (0.0, 0.1)], 2.0, 50, 3, 100)
    assert not keep[:6].any() and not keep[93:].any() and keep[6:93].all()
    for regions, message in [([(1.0, 1.0)], r"region 0 \(1-1 s\) is empty"),
                             ([(-0.5, 1.0)], r"region 0 \(-0.5-1 s\) is outside the audio \(0-2.00 s\)"),
                             ([(1.0, 2.5)], r"is outside the audio"),
                             ([(0.2, 1.0), (0.8, 1.5)],
                              r"regions 0 \(0.2-1 s\) and 1 \(0.8-1.5 s\) overlap: merge them"),
                             ([(0.0, 2.0)], r"the regions cover the whole audio"),
                             ([], r"regions must be a non-empty list"),
                             ([(0.0, float("nan"))], r"regions\[0\] must be a \(start_s, end_s\) pair of numbers")]:
        with pytest.raises(ValueError, match=message):
            infill_keep(regions, 2.0, 50, 3, 100)


def test_generate_infill_on_the_demo_model():
    """Audio in, the region regenerated, every other frame's codes equal to the input's encoding."""
    model = _demo()
    sr = model.sample_rate
    t = torch.arange(int(4 * sr)) / sr
    audio = 0.3 * torch.sin(2 * math.pi * 220 * t)[None]
    with torch.inference_mode():
        codes = model.compression_model.encode(audio[None])
    out, tokens = model.generate_infill(audio, sr, [(1.0, 2.0)], ["a calm piano melody"], return_tokens=True,
                                        generator=torch.Generator().manual_seed(0))
    keep = infill_keep([(1.0, 2.0)], 4.0, model.frame_rate, 3, codes.shape[-1])
    assert out.shape == (1, 1, audio.shape[-1]) and tokens.shape == codes.shape
    assert torch.equal(tokens[..., keep], codes[..., keep])
    assert not torch.equal(tokens[..., ~keep], codes[..., ~keep])
    blended = model.generate_infill(audio, sr, [(1.0, 2.0)], crossfade=0.05,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(blended[..., :int(0.9 * sr)], audio[None, :, :int(0.9 * sr)])  # the original outside
    with pytest.raises(ValueError, match=r"the audio is 12.00 s long but this model's window is 10 s"):
        model.generate_infill(torch.zeros(1, 12 * sr), sr, [(1.0, 2.0)])
    with pytest.raises(ValueError, match=r"got 2 descriptions for 1 clips"):
        model.generate_infill(audio, sr, [(1.0, 2.0)], ["a", "b"])


def _demo():
    from openmagnet import MAGNeT

    return MAGNeT.get_pretrained(DEMO, device="cpu")


def test_crossfade_weights():
    original, generated = torch.zeros(1, 1, 100), torch.ones(1, 1, 100)
    out = crossfade_regions(original, generated, [(0.3, 0.6)], 100, 0.1)[0, 0]
    assert out[:25].eq(0).all() and out[35:55].eq(1).all() and out[65:].eq(0).all()
    assert 0 < float(out[30]) < 1 and float(out[30]) == pytest.approx(0.5)


def test_negative_prompts_replace_the_null_condition():
    model = load_fixture_model("music10")
    model.set_generation_params(**INFILL_GREEDY)
    try:
        plain = model.generate(["happy rock", "jazz"], return_tokens=True)[1]
        same = model.generate(["happy rock", "jazz"], return_tokens=True, negative_descriptions=None)[1]
        nulls = model.generate(["happy rock", "jazz"], return_tokens=True, negative_descriptions=[None, None])[1]
        steered = model.generate(["happy rock", "jazz"], return_tokens=True,
                                 negative_descriptions=["drums", "piano"])[1]
    finally:
        model.set_generation_params()
    assert torch.equal(plain, same) and torch.equal(plain, nulls)
    assert not torch.equal(plain, steered)
    cond = model.conditioner.cfg_condition(["happy rock"], ["drums"])
    direct = model.conditioner.cfg_condition(["happy rock", "drums"])
    torch.testing.assert_close(cond[1], direct[1], rtol=0, atol=1e-6)  # the negative row is "drums"'s condition
    with pytest.raises(ValueError, match=r"got 1 negative descriptions for 2 descriptions"):
        model.generate(["a", "b"], negative_descriptions=["x"])


def test_the_collapse_check_counts_only_the_sampled_frames(monkeypatch):
    """Infilling quiet audio (whose kept frames re-encode to one code) or continuing a quiet prompt must not warn of
    a collapse: the check sees the regenerated frames only, and says nothing about fewer than 25 of them."""
    seen = []
    monkeypatch.setattr(modes, "warn_if_collapsed", lambda tokens, **_: seen.append(tokens.shape[-1]) or [])
    model = _demo()
    sr = model.sample_rate
    silence = torch.zeros(1, 4 * sr)
    keep = infill_keep([(1.0, 2.0)], 4.0, model.frame_rate, 3, 200)
    model.generate_infill(silence, sr, [(1.0, 2.0)], generator=torch.Generator().manual_seed(0))
    model.duration = 2.0
    try:
        model.generate_continuation(silence[:, :sr], sr, generator=torch.Generator().manual_seed(0))
    finally:
        model.duration = model.max_duration
    assert seen == [int((~keep).sum()), 50]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert modes.COLLAPSE_MIN_FRAMES == 25
        monkeypatch.undo()
        assert modes.warn_if_collapsed(torch.full((1, 4, 24), 7)) == []
    with pytest.warns(RuntimeWarning, match="the sampling collapsed"):
        assert modes.warn_if_collapsed(torch.full((1, 4, 25), 7)) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ long


def test_extend_plan():
    model = load_fixture_model("music10")  # 10-s window, 50 Hz
    assert model.extend_plan(1250) == [(0, 500), (250, 500), (250, 500), (250, 500)]
    model.extend_stride = 8.0
    try:
        assert model.extend_plan(1250) == [(0, 500), (100, 500), (100, 450)]  # 500 + 400 + 350
        model.extend_stride = 10.0
        with pytest.raises(ValueError, match=r"extend_stride must be between 0 and the window \(10 s\)"):
            model.extend_plan(1250)
    finally:
        model.extend_stride = None


@pytest.mark.parametrize("arrangement", ["stride1", "nonoverlap"])
def test_25_seconds_from_a_10_second_model(arrangement, monkeypatch):
    model = load_fixture_model("music10")
    windows = []
    original = modes.Run.sample

    def recording(self, descriptions, negatives, frames, prompt=None, **kwargs):
        out = original(self, descriptions, negatives, frames, prompt=prompt, **kwargs)
        windows.append((None if prompt is None else prompt.clone(), out.clone()))
        return out

    monkeypatch.setattr(modes.Run, "sample", recording)
    model.set_generation_params(span_arrangement=arrangement, **GREEDY)
    model.duration = 25.0
    try:
        audio, tokens = model.generate(["happy rock"], return_tokens=True)
    finally:
        model.duration = model.max_duration
        model.set_generation_params()
    assert tokens.shape == (1, 4, 1250)
    assert audio.shape[-1] == 1250 * model.sample_rate // 50
    assert len(windows) == (4 if arrangement == "stride1" else 5)  # nonoverlap trims each window to 498 frames
    assert windows[0][0] is None
    made = windows[0][1].shape[-1]
    for prompt, out in windows[1:]:
        overlap = prompt.shape[-1]
        assert torch.equal(out[..., :overlap], prompt)  # the window's overlap is its prompt, token for token
        assert torch.equal(tokens[..., made - overlap:made], prompt)  # which is the end of what came before
        made += out.shape[-1] - overlap
    assert made >= 1250


def test_bad_durations_are_one_line_errors():
    model = load_fixture_model("music10")
    for value, message in [(0, r"duration must be a positive number of seconds, got 0"),
                           (-3.0, r"duration must be a positive number of seconds, got -3.0"),
                           (float("nan"), r"duration must be a positive number of seconds, got nan"),
                           (0.001, r"duration 0.001 s is shorter than one frame")]:
        model.duration = value
        try:
            with pytest.raises(ValueError, match=message):
                model.generate(["x"])
        finally:
            model.duration = model.max_duration


def test_decoding_past_the_window_goes_in_chunks_that_match_one_pass(monkeypatch):
    """Past the window, the codec decodes one window at a time with DECODE_CONTEXT frames each side (memory of one
    window whatever the length); the audio matches a single pass over the whole clip. The bundled model's codec
    (a real trained SEANet with its LSTM), on the codes of steady harmonic tones."""
    from pathlib import Path

    from openmagnet import MAGNeT
    from openmagnet.codec import DECODE_CONTEXT

    model = MAGNeT.get_pretrained(Path(__file__).resolve().parents[1] / "src/openmagnet/assets/demo", device="cpu")
    sr, codec = model.sample_rate, model.compression_model
    t = torch.arange(25 * sr) / sr
    wav = sum(0.2 / k * torch.sin(2 * torch.pi * k * (220 + 110 * (t // 5)) * t) for k in (1, 2, 3))[None, None]
    with torch.inference_mode():
        codes = codec.encode(wav)
        whole = codec.decode(codes)
    lengths = []
    decode = codec.decode
    monkeypatch.setattr(codec, "decode", lambda c: lengths.append(c.shape[-1]) or decode(c))
    chunked = model.generate_audio(codes)
    window = int(model.max_duration * model.frame_rate)
    assert codes.shape[-1] == 1250 and lengths == [window + DECODE_CONTEXT, window + 2 * DECODE_CONTEXT,
                                                   250 + DECODE_CONTEXT]
    assert chunked.shape == whole.shape
    snr = 10 * torch.log10(whole.pow(2).sum() / (chunked - whole).pow(2).sum())
    assert snr > 70  # 77 dB measured: steady tones are the slowest case for the LSTM's state to settle
    lengths.clear()
    model.generate_audio(codes[..., :window])  # up to the window: one pass, as audiocraft
    assert lengths == [window]


# ------------------------------------------------------------------------------------------ loop
def test_the_wrap_is_part_of_the_context(monkeypatch):
    model = load_fixture_model("music10")
    calls = []
    original = modes.generate_tokens

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs.get("infill"), out.clone()))
        return out

    monkeypatch.setattr(modes, "generate_tokens", recording)
    model.set_generation_params(**LOOP_GREEDY)
    try:
        audio, tokens = model.generate(["happy rock"], return_tokens=True, loop=True, loop_seam=1.0)
    finally:
        model.set_generation_params()
    (none, base), ((given, keep), closed) = calls
    assert none is None and tokens.shape == base.shape == (1, 4, 500)
    shift = 249
    assert torch.equal(given[..., shift - 1], base[..., -1]) and torch.equal(given[..., shift], base[..., 0])
    assert not keep[shift - 24:shift + 24].any() and keep[:shift - 24].all() and keep[shift + 24:].all()
    seam = torch.zeros(500, dtype=torch.bool)
    seam[:24] = seam[-24:] = True  # the frames around the wrap, in the clip's own order
    assert torch.equal(tokens[..., ~seam], base[..., ~seam])  # the rest of the clip is kept
    assert not torch.equal(tokens[..., seam], base[..., seam])  # the seam was regenerated
    assert audio.shape == (1, 1, 500 * 640)
    three = model.generate_audio(torch.cat([tokens] * 3, dim=-1))
    torch.testing.assert_close(audio, three[..., 500 * 640:1000 * 640])


def test_loop_errors():
    model = load_fixture_model("music10")
    model.duration = 20.0
    try:
        with pytest.raises(ValueError, match=r"a loop is made in one window: set model.duration to at most 10 s"):
            model.generate(["x"], loop=True)
    finally:
        model.duration = model.max_duration
    with pytest.raises(ValueError, match=r"loop_seam must be between one frame and the clip's length"):
        model.generate(["x"], loop=True, loop_seam=0)
