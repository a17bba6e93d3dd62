"""What the machine allows (openmagnet/hardware.py, read by api.fast_mode): the int8 saturation probe, the
mode fast=True picks per CPU and GPU, and the dtypes refused where they are a trap. The CPU is faked
(hardware.CPUInfo) where a decision depends on it."""
import pytest
import torch

from tests.conftest import FIXTURES
from openmagnet import MAGNeT
from openmagnet import hardware
from openmagnet.api import fast_mode


def test_saturation_probe_agrees_with_the_cpu_flags():
    flags = hardware._x86_flags()
    if flags is None or not hardware.cpu_info().int8:
        pytest.skip("no x86 CPU flags to compare with")
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    if not vnni:
        assert hardware.int8_saturates()


def fake_cpu(**kw):
    base = dict(arch="x86_64", capability="AVX2", bf16_native=False, int8=True, vnni=False, how="cpuinfo")
    return hardware.CPUInfo(**(base | kw))


@pytest.mark.parametrize("cpu, dtype, quantize", [
    (fake_cpu(), torch.float32, "int8-hybrid"),
    (fake_cpu(capability="AVX512", bf16_native=True, vnni=True), torch.bfloat16, "int8"),
    (fake_cpu(int8=False), torch.float32, None),
    (fake_cpu(arch="arm64", capability="DEFAULT", bf16_native=True, int8=False, how="measured"), torch.bfloat16, None),
])
def test_fast_mode_follows_the_cpu(monkeypatch, cpu, dtype, quantize):
    monkeypatch.setattr(hardware, "cpu_info", lambda: cpu)
    monkeypatch.setattr("openmagnet.api.cpu_info", lambda: cpu)
    mode = fast_mode("cpu")
    assert (mode.dtype, mode.quantize, mode.banded_attention) == (dtype, quantize, True)
    assert cpu.describe() in str(mode)


def test_fast_mode_on_gpus(monkeypatch):
    monkeypatch.setattr("openmagnet.api.cuda_bf16_native", lambda device: True)
    assert fast_mode("cuda").dtype == torch.bfloat16
    monkeypatch.setattr("openmagnet.api.cuda_bf16_native", lambda device: False)
    assert fast_mode("cuda").dtype == torch.float16
    assert fast_mode("mps").dtype == torch.float32


def test_fast_loads_the_chosen_mode_and_says_so(caplog):
    mode = fast_mode("cpu")
    with caplog.at_level("INFO", logger="openmagnet"):
        model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", fast=True)
    assert (model.lm.dtype, model.lm.quantized, model.lm.banded_attention) == (mode.dtype, mode.quantize, True)
    assert f"fast mode: {model.mode}" in caplog.text
    assert model.mode.startswith(str(mode).split(" (")[0])


def test_bf16_is_refused_on_a_cpu_without_it_and_loads_where_native(monkeypatch):
    slow = fake_cpu()
    monkeypatch.setattr(hardware, "cpu_info", lambda: slow)
    monkeypatch.setattr("openmagnet.api.cpu_info", lambda: slow)
    with pytest.raises(ValueError) as err:
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype=torch.bfloat16)
    assert str(err.value) == (
        "dtype=torch.bfloat16 on CPU is a trap: this CPU has no native bf16 (x86_64 AVX2, no native bf16, int8 "
        "without VNNI): bfloat16 matrix products run 10-100x slower than float32 here: use fast=True (here: int8 "
        "feed-forward + float32 attention (int8 for codebook 0) (x86_64 AVX2, no native bf16, int8 without VNNI)) or "
        "the default float32")
    native = fake_cpu(capability="AVX512", bf16_native=True, vnni=True)
    monkeypatch.setattr(hardware, "cpu_info", lambda: native)
    monkeypatch.setattr("openmagnet.api.cpu_info", lambda: native)
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype=torch.bfloat16)
    assert model.lm.dtype == torch.bfloat16 and model.lm.banded_attention


def test_float16_is_refused_on_cpu():
    with pytest.raises(ValueError, match=r"^dtype=torch.float16 on CPU is a trap: float16 matrix products run at "
                                         r"about 1 GFLOP/s on CPU \(.*\): use fast=True \(here: .*\) or the "
                                         r"default float32$"):
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype="float16")


def test_quantize_without_a_device_loads_on_cpu(monkeypatch):
    monkeypatch.setattr("openmagnet.api.default_device", lambda: torch.device("cuda"))  # a GPU machine
    assert MAGNeT.get_pretrained(FIXTURES / "music10", quantize="int8").device.type == "cpu"
