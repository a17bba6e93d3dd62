"""Generation beyond the model's window (model.duration > max_duration): overlapping windows, each prompted with
the end of the previous ones, on the fixture checkpoint."""
import pytest
import torch

from tests.conftest import load_fixture_model

GREEDY = dict(use_sampling=False, decoding_steps=[2, 1, 1, 1])


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
    original = type(model)._generate_tokens

    def recording(self, descriptions, prompt, *args, **kwargs):
        out = original(self, descriptions, prompt, *args, **kwargs)
        windows.append((None if prompt is None else prompt.clone(), out.clone()))
        return out

    monkeypatch.setattr(type(model), "_generate_tokens", recording)
    model.set_generation_params(span_arrangement=arrangement, **GREEDY)
    model.duration = 25.0
    try:
        audio, tokens = model.generate(["happy rock"], return_tokens=True)
    finally:
        model.duration = model.max_duration
        model.set_generation_params()
    assert tokens.shape == (1, 4, 1250)
    assert audio.shape[-1] == 1250 * model.sample_rate // 50
    windows = windows[:-1]  # the last record is the outer call (the whole generation)
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
    from openmagnet.api import DECODE_CONTEXT

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
