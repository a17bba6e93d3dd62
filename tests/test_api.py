"""The public API (openmagnet/api.py). Bad input: each gets a one-line error naming the problem and the fix
(the device, dtype and generator decisions themselves: tests/test_runtime.py)."""

import contextlib

import pytest
import torch

from tests.conftest import FIXTURES, load_fixture_model
from openmagnet.api import MAGNeT


@pytest.fixture(scope="module")
def model():
    m = load_fixture_model("music10")
    yield m
    m.set_generation_params()


def one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


@contextlib.contextmanager
def one_code_heads(model):
    """Every output head's logits 0 but code 3's, so that greedy decoding picks one code (3, or 0) everywhere;
    the heads, the duration and the generation settings are put back after."""
    heads = model.lm.linears
    saved = [head.weight.detach().clone() for head in heads]
    try:
        with torch.no_grad():
            for head in heads:
                head.weight.zero_()
                head.weight[3] = 1.0
        yield
    finally:
        model.duration = model.max_duration
        model.set_generation_params()
        with torch.no_grad():
            for head, weight in zip(heads, saved, strict=True):
                head.weight.copy_(weight)


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
    from tests.conftest import FIXTURES
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16; got 'int8'"):
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype="int8")


def test_text_encoder_not_available_offline():
    from openmagnet import MAGNeT
    from tests.conftest import FIXTURES
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", text_encoder="google/t5-nowhere")
    with pytest.raises(ValueError) as err:
        model.generate(["x"])
    assert one_line(err).startswith("cannot load the text encoder 'google/t5-nowhere'")
    assert "text_encoder='/path/to/google/t5-nowhere'" in str(err.value)


def test_text_encoder_override_accepts_a_local_directory():
    from openmagnet import MAGNeT
    from tests.conftest import FIXTURES
    snapshot = next((FIXTURES / "hf_cache" / "models--t5-base" / "snapshots").iterdir())
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", text_encoder=snapshot)
    model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1])
    assert model.generate(["happy rock"]).shape == (1, 1, 498 * 640)


def test_duration_beyond_the_segment_makes_more_windows(model):
    """Past the window (issue 17): 12 s from a 10-s model, in two overlapping windows (tests/test_long.py)."""
    model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1], span_arrangement="stride1")
    model.duration = 12
    try:
        tokens = model.generate(["x"], return_tokens=True)[1]
    finally:
        model.duration = model.max_duration
        model.set_generation_params()
    assert tokens.shape[-1] == 600


def test_shorter_duration_is_allowed(model):
    model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1], span_arrangement="stride1")
    model.duration = 1
    try:
        audio, tokens = model.generate(["x"], return_tokens=True)
    finally:
        model.duration = model.max_duration
    assert tokens.shape == (1, 4, 50) and audio.shape == (1, 1, 32000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(quantize="int4"), "quantize must be one of int8, int8-hybrid, int8-all (or None), got 'int4'"),
    (dict(quantize="int8-all", dtype="bfloat16"), "quantize='int8-all' leaves no matrix in dtype='bfloat16': drop "
                                                  "dtype, or use quantize='int8' to keep the attention projections "
                                                  "in that dtype"),
    (dict(fast=True, dtype="float32"), "fast=True chooses dtype and quantize for this machine: drop dtype= and "
                                       "quantize=, or drop fast=True"),
    (dict(quantize="int8", device="cuda"), "quantize='int8' runs on CPU only, but device is cuda: use "
                                           "dtype=torch.bfloat16 or torch.float16 on cuda, or device='cpu'"),
])
def test_fast_mode_errors(monkeypatch, kwargs, message):
    monkeypatch.setattr("openmagnet.runtime.check_device", lambda device: torch.device(device))  # no GPU needed
    kwargs.setdefault("device", "cpu")
    with pytest.raises(ValueError) as err:
        MAGNeT.get_pretrained(FIXTURES / "music10", **kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------------------------------- generator
def test_generate_refuses_a_cpu_generator_for_a_gpu_model(monkeypatch):
    model = load_fixture_model("music10")
    monkeypatch.setattr(MAGNeT, "device", property(lambda self: torch.device("cuda", 0)))  # checked before any work
    with pytest.raises(ValueError, match=r"^the generator is on cpu but the model samples on cuda:0: "):
        model.generate(["happy rock"], generator=torch.Generator())
    with pytest.raises(ValueError, match=r"^the generator is on cpu but the model samples on cuda:0: "):
        model.generate_unconditional(1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"^the generator is on cpu but the model samples on cuda:0: "):
        model.generate_continuation(torch.zeros(1, 1, 3200), 32000, generator=torch.Generator())


def test_cpu_generator_with_cpu_model_reproduces():
    model = load_fixture_model("music10")
    model.set_generation_params(decoding_steps=[1, 1, 1, 1])
    try:
        runs = [model.generate(["happy rock"], return_tokens=True,
                               generator=torch.Generator(device=model.device).manual_seed(5))[1] for _ in range(2)]
    finally:
        model.set_generation_params()
    assert torch.equal(runs[0], runs[1])


def test_collapsed_sampling_is_warned(model):
    """One code filling more than 30 % of a stage's frames gets a RuntimeWarning naming the stage and the fix."""
    from openmagnet.modes import warn_if_collapsed

    import warnings

    spread = torch.arange(2 * 4 * 100).reshape(2, 4, 100) % 2048
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_collapsed(spread) == []
    collapsed = spread.clone()
    collapsed[1, 0, :31] = 7  # 31 % of clip 1's first stage
    collapsed[0, 2, :50] = 5  # 50 % of clip 0's third stage
    with pytest.warns(RuntimeWarning, match=r"^the sampling collapsed: one code fills more than 30% of the frames "
                                            r"\(codebook 0: 31%, codebook 2: 50%\); try remask_noise=3 \(now 0\) or "
                                            r"max_cfg_coef=5 \(now 10\) with set_generation_params$"):
        assert warn_if_collapsed(collapsed) == [0, 2]
    # and generation checks its own tokens: an LM whose heads prefer one code collapses every stage
    with one_code_heads(model):
        model.set_generation_params(use_sampling=False, decoding_steps=[2, 1, 1, 1])
        model.duration = 1.0
        with pytest.warns(RuntimeWarning, match="the sampling collapsed"):
            model.generate(["a"])


def test_the_collapse_warning_names_a_remedy_not_in_force():
    """With re-masking noise already on (the demo model's 3), the warning does not ask for it again but for what
    helped there (a weaker guidance, a higher temperature); at CFG 1 it no longer suggests lowering the guidance;
    the command line says it in flags."""
    from openmagnet.modes import SamplingCollapsed
    from openmagnet.config import GenerationParams
    from openmagnet.cli import FLAGS

    demo = GenerationParams(max_cfg_coef=3.0, remask_noise=3.0)
    warning = SamplingCollapsed({0: 0.62}, 0.3, demo)
    assert str(warning) == ("the sampling collapsed: one code fills more than 30% of the frames (codebook 0: 62%); "
                            "try max_cfg_coef=1.5 (now 3) or temperature=4.5 (now 3) with set_generation_params")
    assert warning.describe(FLAGS) == ("the sampling collapsed: one code fills more than 30% of the frames "
                                       "(codebook 0: 62%); try --max-cfg 1.5 (now 3) or --temperature 4.5 (now 3)")
    flat = SamplingCollapsed({1: 0.5}, 0.3, GenerationParams(max_cfg_coef=1.0, min_cfg_coef=1.0, remask_noise=2.0))
    assert str(flat).endswith("try temperature=4.5 (now 3) or remask_noise=4 (now 2) with set_generation_params")


def test_one_collapse_warning_per_generation_past_the_window(model):
    """A generation made of several windows warns once for the whole clip, not once per window."""
    import warnings

    with one_code_heads(model):  # every window collapses
        model.set_generation_params(use_sampling=False, decoding_steps=[1, 1, 1, 1])
        model.duration = 25.0  # three windows of 10 s
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.generate(["a"])
        collapsed = [w for w in caught if "the sampling collapsed" in str(w.message)]
        assert len(collapsed) == 1, [str(w.message) for w in caught]


def test_remove_dc_is_opt_in_and_leaves_the_reference_path_alone(model):
    """generate()'s audio is the codec's decoding of its tokens, exactly (the reference's), unless remove_dc=True
    (ours): then it is that audio through audio.remove_dc; generation_params lists it only when set, and feeds back
    into set_generation_params (which takes the reference's `temp`)."""
    from openmagnet.audio import remove_dc

    model.set_generation_params(decoding_steps=[2, 1, 1, 1])
    assert "remove_dc" not in model.generation_params
    wav, tokens = model.generate(["a"], generator=torch.Generator().manual_seed(0), return_tokens=True)
    assert torch.equal(wav, model.generate_audio(tokens))
    model.set_generation_params(decoding_steps=[2, 1, 1, 1], remove_dc=True, temperature=2.5)
    params = model.generation_params
    assert params["remove_dc"] is True and params["temp"] == 2.5
    model.set_generation_params(**params)  # the getter's dict goes back into the setter
    assert model.generation_params == params
    wav2, tokens2 = model.generate(["a"], generator=torch.Generator().manual_seed(0), return_tokens=True)
    assert torch.equal(wav2, remove_dc(model.generate_audio(tokens2), model.sample_rate))
    with pytest.raises(TypeError, match="give one"):
        model.set_generation_params(temperature=2.0, temp=1.0)
    with pytest.raises(ValueError, match="remove_dc must be true or false; got 'yes'"):
        model.set_generation_params(remove_dc="yes")
    model.set_generation_params()
