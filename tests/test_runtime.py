"""The runtime's decisions (openmagnet/runtime.py). GPU and Mac decisions, checked on CPU: the default dtype per
GPU, where the codec runs on MPS, device and generator checks and the deterministic switch (the accelerator is
faked: monkeypatched torch queries, or the decision function called with a device object; nothing runs on it).
Fast mode: the kernel pair chosen from measured timings (faked here, so
that nothing depends on this machine's speed), never slower than float32; the timings cached per CPU and torch
version and measured again on request; what get_pretrained(fast=True) then loads; the GPU rules."""
import json
import os
import random

import pytest
import torch

from tests.conftest import FIXTURES
from openmagnet import MAGNeT
from openmagnet import hardware, runtime
from openmagnet.runtime import FastMode, allowed, check_device, check_generator, check_generator_device, \
    choose_kernels, codec_device, default_dtype, deterministic, group_cost


def fake_cpu(**kw):
    base = dict(arch="x86_64", capability="AVX2", bf16_native=False, int8=True, vnni=False, how="cpuinfo")
    return hardware.CPUInfo(**(base | kw))


def timings(attention: dict, feed_forward: dict) -> dict:
    return {"attention": dict(attention), "feed_forward": dict(feed_forward)}


# ------------------------------------------------------------------------------------------ the choice
def test_the_fastest_allowed_pair_wins():
    t = timings({"float32": 4.0, "bfloat16": 1.5, "int8:x86": 1.0, "int8:onednn": 0.6},
                {"float32": 8.0, "bfloat16": 3.0, "int8:x86": 2.5, "int8:onednn": 1.0})
    # int8 attention is only allowed with the same int8 feed-forward, and costs float32 outside codebook 0:
    # onednn hybrid = 0.4 * 0.6 + 0.6 * 4.0 + 1.0 = 3.64 > bf16 attention + onednn feed-forward = 2.5
    assert choose_kernels(t) == ("bfloat16", "int8:onednn")
    assert group_cost(t, "int8:onednn", "int8:onednn") == pytest.approx(0.4 * 0.6 + 0.6 * 4.0 + 1.0)


def test_hybrid_wins_where_there_is_no_bf16():
    t = timings({"float32": 4.0, "int8:x86": 2.0}, {"float32": 8.0, "int8:x86": 4.0})
    assert choose_kernels(t) == ("int8:x86", "int8:x86")
    assert not allowed("int8:x86", "float32") and not allowed("int8:x86", "int8:onednn")


@pytest.mark.parametrize("attention, feed_forward", [
    ({"float32": 4.0, "bfloat16": 5.0}, {"float32": 8.0, "bfloat16": 9.0, "int8:x86": 8.5}),  # all slower
    ({"float32": 4.0, "bfloat16": 3.9}, {"float32": 8.0, "int8:x86": 7.9}),  # faster, but within the margin
])
def test_never_a_mode_slower_than_exact(attention, feed_forward):
    assert choose_kernels(timings(attention, feed_forward)) == ("float32", "float32")


def test_random_timings_never_pick_slower_than_float32():
    rng = random.Random(0)
    names = ["float32", "bfloat16", "int8:x86", "int8:onednn", "int8:int_mm"]
    for _ in range(500):
        t = timings({k: rng.uniform(0.1, 10) for k in names}, {k: rng.uniform(0.1, 10) for k in names})
        choice = choose_kernels(t)
        assert allowed(*choice)
        assert group_cost(t, *choice) <= group_cost(t, "float32", "float32")
        if choice != ("float32", "float32"):
            assert group_cost(t, *choice) <= runtime.FAST_MARGIN * group_cost(t, "float32", "float32")
            assert all(group_cost(t, a, f) >= group_cost(t, *choice) for a in names for f in names if allowed(a, f))


@pytest.mark.parametrize("cpu, bf16", [(fake_cpu(), False), (fake_cpu(capability="AVX512", bf16_native=True), True)])
def test_candidates_keep_the_trap_refusals(monkeypatch, cpu, bf16):
    monkeypatch.setattr(runtime, "cpu_info", lambda: cpu)
    kernels = runtime.candidates()
    assert kernels["attention"][0] == kernels["feed_forward"][0] == "float32"
    assert ("bfloat16" in kernels["feed_forward"]) == bf16
    assert "float16" not in kernels["feed_forward"]
    assert [k for k in kernels["feed_forward"] if k.startswith("int8:")] == \
        [f"int8:{k}" for k in runtime.int8_kernels() if k != "qnnpack"]


@pytest.mark.parametrize("mode, text", [
    (FastMode("bfloat16", "int8:onednn", True, ""), "int8 (onednn) feed-forward + bfloat16 attention"),
    (FastMode("int8:x86", "int8:x86", True, ""), "int8 (x86) feed-forward + float32 attention (int8 for codebook 0)"),
    (FastMode("bfloat16", "bfloat16", True, ""), "bfloat16"),
    (FastMode("float32", "bfloat16", True, ""), "bfloat16 feed-forward + float32 attention"),
])
def test_modes_describe_themselves(mode, text):
    assert mode.describe() == text
    assert (mode.quantize, mode.engine) == {"int8:onednn": ("int8", "onednn"), "int8:x86": ("int8-hybrid", "x86")} \
        .get(mode.feed_forward, (None, None))


def test_guess_without_a_model_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_info", lambda: fake_cpu(int8=False))
    assert runtime.fast_mode("cpu").describe() == "float32"
    monkeypatch.setattr(runtime, "cpu_info", lambda: fake_cpu(arch="arm64", bf16_native=True, int8=False))
    assert runtime.fast_mode("cpu").describe() == "bfloat16"


def test_fast_mode_on_gpus(monkeypatch):
    monkeypatch.setattr(runtime, "cuda_bf16_native", lambda device: True)
    assert runtime.fast_mode("cuda").dtype == torch.bfloat16
    monkeypatch.setattr(runtime, "cuda_bf16_native", lambda device: False)
    assert runtime.fast_mode("cuda").dtype == torch.float16
    assert runtime.fast_mode("mps").dtype == torch.float32


# ------------------------------------------------------------------------------------------ measure and cache
@pytest.fixture
def lm():
    return MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu").lm


def test_timings_cover_every_candidate_on_the_models_shapes(lm):
    t = runtime.time_kernels(lm, repeats=1)
    kernels = runtime.candidates()
    assert {g: sorted(t[g]) for g in runtime.GROUPS} == {g: sorted(kernels[g]) for g in runtime.GROUPS}
    assert all(v > 0 for g in runtime.GROUPS for v in t[g].values())


def test_timings_are_cached_per_machine_and_rechecked_on_request(lm, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path))
    kernels = runtime.candidates()
    fake = {g: {k: (1.0 if k == "float32" else 0.5) for k in kernels[g]} for g in runtime.GROUPS}
    calls = []
    monkeypatch.setattr(runtime, "time_kernels", lambda lm, kernels: calls.append(1) or fake)
    first, source = runtime.measured_timings(lm)
    assert first == fake and source.startswith("measured now") and len(calls) == 1
    files = list((tmp_path / "kernels").glob("*.json"))
    assert len(files) == 1 and torch.__version__.replace("+", "-") in files[0].name
    entry = next(iter(json.loads(files[0].read_text()).values()))
    assert entry["timings"] == fake and tuple(entry["choice"]) == choose_kernels(fake)
    again, source = runtime.measured_timings(lm)
    assert again == fake and source.startswith("cached in") and len(calls) == 1  # read, not measured
    runtime.measured_timings(lm, recheck=True)
    assert len(calls) == 2
    files[0].write_text("{not json")  # a damaged cache is measured again, and rewritten
    runtime.measured_timings(lm)
    assert len(calls) == 3 and json.loads(files[0].read_text())


def test_an_unwritable_cache_is_skipped(lm, monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("OPENMAGNET_CACHE", str(blocker))  # a file where the folder should be
    kernels = runtime.candidates()
    monkeypatch.setattr(runtime, "time_kernels",
                        lambda lm, kernels: {g: {k: 1.0 for k in kernels[g]} for g in runtime.GROUPS})
    with caplog.at_level("WARNING", logger="openmagnet"):
        mode = runtime.fast_mode("cpu", lm)
    assert mode.describe() == "float32" and "could not cache the kernel timings" in caplog.text
    assert kernels


def test_user_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path / "x"))
    assert runtime.user_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("OPENMAGNET_CACHE")
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.user_cache_dir() == tmp_path / "xdg" / "openmagnet"


# ------------------------------------------------------------------------------------------ what loads
def _fake_timings(monkeypatch, winner: str):
    """Timings where `winner` is the fastest feed-forward kernel and the attention stays float32."""
    def fake(lm, kernels):
        return {"attention": {k: (1.0 if k == "float32" else 2.0) for k in kernels["attention"]},
                "feed_forward": {k: (0.2 if k == winner else 1.0) for k in kernels["feed_forward"]}}
    monkeypatch.setattr(runtime, "time_kernels", fake)


def test_fast_loads_the_measured_choice_and_says_so(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path))
    engine = [k for k in runtime.candidates()["feed_forward"] if k.startswith("int8:")][-1][5:]  # not the first
    _fake_timings(monkeypatch, f"int8:{engine}")
    with caplog.at_level("INFO", logger="openmagnet"):
        model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast=True)
    mode = model.fast_mode
    assert (mode.attention, mode.feed_forward) == ("float32", f"int8:{engine}")
    assert (model.lm.quantized, model.lm.int8_engine, model.lm.dtype, model.lm.banded_attention) == \
        ("int8", engine, torch.float32, True)
    assert model.mode.startswith(f"int8 ({engine}) feed-forward + float32 attention")
    assert f"fast mode: {model.mode}" in caplog.text and "measured now" in caplog.text
    assert "1.67x the float32 matrices' speed" in mode.why  # (1 + 1) / (1 + 0.2)
    again = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast=True)
    assert "cached in" in again.fast_mode.why and again.mode == model.mode


def test_fast_falls_back_to_float32_where_nothing_is_faster(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path))
    _fake_timings(monkeypatch, "float32")
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast=True)
    assert model.mode == "float32, banded attention" and model.lm.quantized is None
    assert "no kernel beat float32 by 5%" in model.fast_mode.why


def test_quantize_by_hand_takes_the_measured_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path))
    engine = [k for k in runtime.candidates()["feed_forward"] if k.startswith("int8:")][-1][5:]
    _fake_timings(monkeypatch, f"int8:{engine}")
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", quantize="int8-all")
    assert model.lm.int8_engine == engine and model.mode.startswith(f"int8 ({engine}) (every matrix)")


def test_fast_recheck_needs_fast():
    with pytest.raises(ValueError) as err:
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast_recheck=True)
    assert str(err.value) == "fast_recheck=True measures the kernels of fast mode again: add fast=True"


# ------------------------------------------------------------------------------------------ compile
def test_padded_text_keys_give_the_same_attention():
    from openmagnet.lm import pad_cross_kv

    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu")
    lm = model.lm
    cond = torch.randn(2, 7, lm.cfg.dim, generator=torch.Generator().manual_seed(0))
    kv = lm.cross_kv(cond)
    padded = pad_cross_kv(kv, 32)
    assert padded[0][0].shape[2] == 32 and padded[0][2].shape == (1, 1, 1, 32)
    assert torch.isinf(padded[0][2][..., 7:]).all() and not padded[0][2][..., :7].any()
    codes = torch.randint(0, 2048, (2, 4, 50), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain, bucketed = lm.stage_logits(codes, None, 0, kv), lm.stage_logits(codes, None, 0, padded)
    torch.testing.assert_close(bucketed, plain, rtol=1e-5, atol=1e-5)


def test_compile_is_refused_for_exact_and_runs_a_fast_mode(monkeypatch, tmp_path):
    with pytest.raises(ValueError) as err:
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", compile=True)
    assert str(err.value) == ("compile=True changes the float arithmetic, and exact float32 stays uncompiled "
                              "(bit-identical to audiocraft): add fast=True (or dtype= / quantize=)")
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path))
    _fake_timings(monkeypatch, "float32")  # fast mode falls back to float32 + banded: float kernels only
    eager = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast=True)
    compiled = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast=True, compile=True)
    assert compiled.lm.compiled_layers is not None and eager.lm.compiled_layers is None
    settings = dict(use_sampling=False, decoding_steps=[2, 1, 1, 1])
    for model in (eager, compiled):
        model.set_generation_params(**settings)
        model.duration = 1.0
    tokens = [m.generate(["happy rock"], return_tokens=True)[1] for m in (eager, compiled)]
    assert (tokens[0] == tokens[1]).float().mean() > 0.9
    again = compiled.generate(["a much longer prompt about calm piano and soft strings"], return_tokens=True)[1]
    assert again.shape == tokens[0].shape


# ---------------------------------------------------------------------------------------- default dtype
@pytest.mark.parametrize("capability,dtype", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                              ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_cuda_default_dtype_follows_native_bf16(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # V100 and T4 say True (emulated)
    assert default_dtype(torch.device("cuda")) == dtype


def test_cpu_and_mps_default_to_float32():
    assert default_dtype(torch.device("cpu")) == torch.float32
    assert default_dtype(torch.device("mps")) == torch.float32


# ---------------------------------------------------------------------------------------- codec device
@pytest.mark.parametrize("mac,torch_version,expected", [
    ("14.6.1", "2.13.0", "cpu"),      # macOS refuses outputs over 65536
    ("15.0.1", "2.13.0+cpu", "cpu"),
    ("15.1", "2.5.1", "cpu"),         # torch refuses them before 2.6 whatever the macOS
    ("15.1", "2.6.0", "mps"),
    ("26.0", "2.13.0", "mps"),
    ("", "2.13.0", "cpu"),            # unreadable: the safe side
])
def test_codec_runs_on_cpu_on_old_mps(mac, torch_version, expected):
    assert codec_device(torch.device("mps"), mac_version=mac, torch_version=torch_version).type == expected


def test_codec_stays_with_the_model_elsewhere():
    assert codec_device("cpu", mac_version="14.0") == torch.device("cpu")
    assert codec_device(torch.device("cuda", 1), mac_version="14.0") == torch.device("cuda", 1)


# ---------------------------------------------------------------------------------------- device checks
def test_check_device_names_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError) as err:
        check_device("cuda")
    assert str(err.value) == ("CUDA is not available on this machine (no NVIDIA GPU, or a CPU-only torch build): "
                              "use device='cpu', or device=None for the best available")
    with pytest.raises(ValueError, match=r"^MPS \(the Apple GPU\) is not available on this machine: use device='cpu'"):
        check_device("mps")
    with pytest.raises(ValueError, match=r"^unknown device 'gpu': use device='cpu'"):
        check_device("gpu")
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(None) == torch.device("cpu")  # the best available here


def test_check_device_counts_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"^there is no GPU cuda:1 on this machine \(1 found\): use device='cpu'"):
        check_device("cuda:1")


# ---------------------------------------------------------------------------------------- generator
def test_generator_device_must_match_the_model():
    check_generator_device(torch.device("cuda"), torch.device("cuda", 0))  # cuda means the current GPU
    check_generator_device(torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError) as err:
        check_generator_device(torch.device("cpu"), torch.device("cuda", 0))
    assert str(err.value) == ("the generator is on cpu but the model samples on cuda:0: create it there, "
                              "e.g. torch.Generator(device=model.device).manual_seed(0)")
    with pytest.raises(ValueError, match="the generator is on cuda:1 but the model samples on cuda:0"):
        check_generator_device(torch.device("cuda", 1), torch.device("cuda", 0))
    with pytest.raises(ValueError, match="the generator is on cpu but the model samples on mps"):
        check_generator_device(torch.device("cpu"), torch.device("mps"))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        check_generator(0, torch.device("cpu"))


# ---------------------------------------------------------------------------------------- deterministic
def test_deterministic_sets_and_resets_the_switches(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        deterministic()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "highest"
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.allow_tf32
