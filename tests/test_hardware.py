"""What the machine allows (openmagnet/hardware.py, read by runtime.fast_mode): the int8 saturation probes,
the CPU's flags (AMX, AVX512-FP16), and the dtypes refused where they are a trap. The CPU is faked
(hardware.CPUInfo) where a decision depends on it; fast mode's decisions are tested in test_runtime.py."""
import pytest
import torch

from tests.conftest import FIXTURES
from openmagnet import MAGNeT
from openmagnet import hardware


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


@pytest.mark.parametrize("flags, amx, fp16", [
    ({"avx2", "fma"}, False, False),                                                # AVX2 EPYC
    ({"avx512f", "avx512_bf16", "avx512_vnni"}, False, False),                      # Zen 4
    ({"avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile"}, True, True),  # Sapphire Rapids
])
def test_cpu_flags_know_amx_and_fp16(monkeypatch, flags, amx, fp16):
    monkeypatch.setattr(hardware, "_x86_flags", lambda: frozenset(flags))
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpu = hardware.cpu_info.__wrapped__()
    assert (cpu.amx, cpu.fp16_native, cpu.bf16_native) == (amx, fp16, "avx512_bf16" in flags)
    assert ("AMX" in cpu.describe()) == amx and ("native fp16" in cpu.describe()) == fp16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # masked by the user: none of them counts
    masked = hardware.cpu_info.__wrapped__()
    assert not (masked.amx or masked.fp16_native or masked.bf16_native)


def test_float16_is_no_trap_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_info", lambda: fake_cpu(capability="AVX512", bf16_native=True, vnni=True,
                                                                amx=True, fp16_native=True))
    assert hardware.slow_dtype_reason(torch.device("cpu"), torch.float16) is None
    monkeypatch.setattr(hardware, "cpu_info", lambda: fake_cpu(capability="AVX512", bf16_native=True, vnni=True))
    assert "about 1 GFLOP/s" in hardware.slow_dtype_reason(torch.device("cpu"), torch.float16)


def test_int_mm_probe_is_exact_or_refused():
    """Where the probe says yes, torch._int_mm gives the exact integer products at the top of the int8 range."""
    if not hardware.int_mm_exact():
        pytest.skip("torch._int_mm is missing or saturates on this CPU (as with the AVX2 pins on a VNNI CPU)")
    a = torch.randint(-127, 128, (40, 96), dtype=torch.int8)
    b = torch.randint(-127, 128, (96, 24), dtype=torch.int8)
    assert torch.equal(torch._int_mm(a, b), a.long().mm(b.long()).int())


def test_saturation_probe_per_engine():
    """Each engine is probed on its own: an engine that saturates gives wrong integer sums on full-range operands."""
    for engine in hardware.int8_engines():
        assert isinstance(hardware.int8_saturates(engine), bool)
    assert hardware.int8_saturates() == hardware.int8_saturates(hardware.int8_engines()[0])


def test_bf16_is_refused_on_a_cpu_without_it_and_loads_where_native(monkeypatch):
    slow = fake_cpu()
    monkeypatch.setattr(hardware, "cpu_info", lambda: slow)
    with pytest.raises(ValueError) as err:
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype=torch.bfloat16)
    assert str(err.value) == (
        "dtype=torch.bfloat16 on CPU is a trap: this CPU has no native bf16 (x86_64 AVX2, no native bf16, int8 "
        "without VNNI): bfloat16 matrix products run 10-100x slower than float32 here: use fast=True (it measures "
        "what this CPU runs fastest) or the default float32")
    native = fake_cpu(capability="AVX512", bf16_native=True, vnni=True)
    monkeypatch.setattr(hardware, "cpu_info", lambda: native)
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype=torch.bfloat16)
    assert model.lm.dtype == torch.bfloat16 and model.lm.banded_attention


def test_float16_is_refused_on_cpu():
    with pytest.raises(ValueError, match=r"^dtype=torch.float16 on CPU is a trap: float16 matrix products run at "
                                         r"about 1 GFLOP/s on CPU \(.*\): use fast=True \(it measures what "
                                         r"this CPU runs fastest\) or the default float32$"):
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype="float16")


def test_quantize_without_a_device_loads_on_cpu(monkeypatch):
    monkeypatch.setattr("openmagnet.runtime.default_device", lambda: torch.device("cuda"))  # a GPU machine
    assert MAGNeT.get_pretrained(FIXTURES / "music10", quantize="int8").device.type == "cpu"
