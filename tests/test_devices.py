"""GPU and Mac decisions, checked on CPU: the default dtype per GPU, where the codec runs on MPS,
device and generator checks, the MPS attention inputs and the deterministic switch. The accelerator
is faked (monkeypatched torch queries, or the decision function called with a device object) and
nothing runs on it."""
import os

import pytest
import torch

from conftest import load_fixture_model
from openmagnet.api import MAGNeT, check_device, check_generator, check_generator_device, codec_device, \
    default_dtype, deterministic
from openmagnet.attention import _sdpa_inputs


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


# ---------------------------------------------------------------------------------------- attention inputs
def test_sdpa_inputs_are_contiguous_for_mps_only():
    q, k, v = (torch.randn(1, 5, 2, 64).transpose(1, 2) for _ in range(3))  # [B, H, T, d], strided
    assert not q.is_contiguous()
    out = _sdpa_inputs(q, k, v, device_type="mps")
    assert all(t.is_contiguous() for t in out) and all(torch.equal(a, b) for a, b in zip(out, (q, k, v)))
    same = _sdpa_inputs(q, k, v)  # CPU (and CUDA): untouched, so exact mode keeps its kernel path
    assert all(a is b for a, b in zip(same, (q, k, v)))


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
