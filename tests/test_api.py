"""Bad input: each gets a one-line error naming the problem and the fix."""
import pytest
import torch

from conftest import load_fixture_model


@pytest.fixture(scope="module")
def model():
    m = load_fixture_model("music10")
    yield m
    m.set_generation_params()


def one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


def test_empty_description_list(model):
    with pytest.raises(ValueError) as err:
        model.generate([])
    assert one_line(err) == ("descriptions is empty: pass at least one text prompt, e.g. ['happy rock'], "
                             "or use generate_unconditional(num_samples)")


@pytest.mark.parametrize("bad", [[3], ["ok", b"bytes"], [["nested"]]])
def test_description_not_a_string(model, bad):
    with pytest.raises(TypeError, match=r"descriptions\[\d\] must be a string or None, got \w+") as err:
        model.generate(bad)
    one_line(err)


def test_single_string_instead_of_list(model):
    with pytest.raises(TypeError, match=r"wrap it in a list: \['happy rock'\]"):
        model.generate("happy rock")


def test_prompt_longer_than_segment(model):
    prompt = torch.zeros(1, 1, 32000 * 11)
    with pytest.raises(ValueError) as err:
        model.generate_continuation(prompt, 32000, ["x"])
    assert one_line(err) == "the prompt is 11.00 s long but this model generates 10 s: trim the prompt to less than 10 s"  # noqa: E501


def test_prompt_exactly_segment_long(model):
    with pytest.raises(ValueError, match="trim the prompt to less than 10 s"):
        model.generate_continuation(torch.zeros(1, 1, 320000), 32000)


@pytest.mark.parametrize("shape", [(32000,), (1, 1, 1, 32000)])
def test_prompt_wrong_rank(model, shape):
    with pytest.raises(ValueError) as err:
        model.generate_continuation(torch.zeros(shape), 32000)
    assert one_line(err) == f"prompt must be shaped [C, T] or [B, C, T], got {list(shape)}"


def test_prompt_not_a_tensor(model):
    with pytest.raises(TypeError, match="prompt must be a torch.Tensor shaped"):
        model.generate_continuation([0.0] * 100, 32000)


def test_prompt_descriptions_count_mismatch(model):
    with pytest.raises(ValueError, match="got 3 descriptions for 2 prompts"):
        model.generate_continuation(torch.zeros(2, 1, 3200), 32000, ["a", "b", "c"])


def test_stereo_prompt_is_downmixed(model):
    """[C, T] stereo input is accepted and averaged to mono, as the reference does."""
    model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1])
    stereo = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    _, a = model.generate_continuation(stereo, 32000, return_tokens=True)
    _, b = model.generate_continuation(stereo.mean(0, keepdim=True), 32000, return_tokens=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [[20, 10, 10], [20, 10, 10, 10, 10], [20, 10, 0, 10], [20, -1, 10, 10],
                                   [20, 10.5, 10, 10], "20,10,10,10", 20])
def test_bad_decoding_steps(model, steps):
    with pytest.raises(ValueError) as err:
        model.set_generation_params(decoding_steps=steps)
    assert one_line(err) == ("decoding_steps must be 4 positive integers (one per codebook), "
                             f"e.g. [20, 10, 10, 10]; got {_shown(steps)}")


def _shown(steps):
    if isinstance(steps, list):
        return repr(tuple(int(s) if isinstance(s, float) and s.is_integer() else s for s in steps))
    return repr(steps)


def test_integral_float_steps_are_accepted(model):
    model.set_generation_params(decoding_steps=[20.0, 10, 10, 10])
    assert model.generation_params["decoding_steps"] == [20, 10, 10, 10]


@pytest.mark.parametrize("top_p", [-0.1, 1.5])
def test_top_p_out_of_range(model, top_p):
    with pytest.raises(ValueError) as err:
        model.set_generation_params(top_p=top_p)
    assert one_line(err) == f"top_p must be in [0, 1] (0 disables nucleus sampling); got {top_p}"


def test_negative_temperature(model):
    with pytest.raises(ValueError) as err:
        model.set_generation_params(temperature=-1.0)
    assert one_line(err) == "temperature must be >= 0; got -1.0"


def test_unknown_span_arrangement(model):
    with pytest.raises(ValueError) as err:
        model.set_generation_params(span_arrangement="overlap")
    assert one_line(err) == "span_arrangement must be one of nonoverlap, stride1; got 'overlap'"


def test_bad_num_samples(model):
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        model.generate_unconditional(0)


def test_settings_survive_a_rejected_call(model):
    model.set_generation_params(top_p=0.5)
    with pytest.raises(ValueError):
        model.set_generation_params(top_p=2.0)
    assert model.generation_params["top_p"] == 0.5


def test_bad_dtype():
    from openmagnet import MAGNeT
    from conftest import FIXTURES
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16; got 'int8'"):
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype="int8")


def test_text_encoder_not_available_offline():
    from openmagnet import MAGNeT
    from conftest import FIXTURES
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", text_encoder="google/t5-nowhere")
    with pytest.raises(ValueError) as err:
        model.generate(["x"])
    assert one_line(err).startswith("cannot load the text encoder 'google/t5-nowhere'")
    assert "text_encoder='/path/to/google/t5-nowhere'" in str(err.value)


def test_text_encoder_override_accepts_a_local_directory():
    from openmagnet import MAGNeT
    from conftest import FIXTURES
    snapshot = next((FIXTURES / "hf_cache" / "models--t5-base" / "snapshots").iterdir())
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", text_encoder=snapshot)
    model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1])
    assert model.generate(["happy rock"]).shape == (1, 1, 498 * 640)


def test_duration_beyond_the_segment(model):
    model.duration = 12
    try:
        with pytest.raises(ValueError, match="duration is 12 s but this model generates at most 10 s"):
            model.generate(["x"])
    finally:
        model.duration = model.max_duration


def test_shorter_duration_is_allowed(model):
    model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1], span_arrangement="stride1")
    model.duration = 1
    try:
        audio, tokens = model.generate(["x"], return_tokens=True)
    finally:
        model.duration = model.max_duration
    assert tokens.shape == (1, 4, 50) and audio.shape == (1, 1, 32000)
