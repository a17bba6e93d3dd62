"""Loops (generate(loop=True)): the seam is regenerated with the clip's end and start as its context, the rest
of the clip is kept, and the audio is one period of the repeated clip."""
import pytest
import torch

import openmagnet.api as api
from tests.conftest import load_fixture_model

GREEDY = dict(use_sampling=False, decoding_steps=[2, 1, 1, 1], span_arrangement="stride1")


def test_the_wrap_is_part_of_the_context(monkeypatch):
    model = load_fixture_model("music10")
    calls = []
    original = api.generate_tokens

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs.get("infill"), out.clone()))
        return out

    monkeypatch.setattr(api, "generate_tokens", recording)
    model.set_generation_params(**GREEDY)
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
