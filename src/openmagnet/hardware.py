"""What the machine's matrix arithmetic can do: the facts every dtype, quantization and
training-precision decision asks for (the decisions themselves are in runtime.py).

On CPU, reduced precision is a trap unless the CPU has the instructions for it:

  bf16   fast only with native bf16 dot products (x86: AVX512_BF16 or AMX; ARM: the BF16
         extension where torch's kernels use it). Without them torch converts element by element:
         measured 0.5-35 GFLOP/s against 140-195 in float32 on 2-core AMD EPYCs.
  fp16   about 1 GFLOP/s on every CPU without AVX512-FP16 or AMX-FP16 we measured; with them (Sapphire
         Rapids and later) about the fp32 rate: not a trap there, but no faster either.
  int8   fast everywhere x86 (PyTorch's quantized kernels: 220-740 GFLOP/s), but without VNNI the
         kernels add pairs of u8 x s8 products in 16 bits, which saturates unless the operands
         leave a bit of headroom; `int8_saturates()` tests the kernel itself.

The x86 answers come from the CPU's flags (Linux /proc/cpuinfo), minus what the user masked with
`ATEN_CPU_CAPABILITY` or `ONEDNN_MAX_CPU_ISA`; elsewhere (ARM, macOS) from a short measurement.
Everything is computed once per process. On CUDA, bf16 is native from compute capability 8.0
(Ampere); `torch.cuda.is_bf16_supported()` also counts emulated bf16 (T4, V100), which is slow.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import subprocess
import time
import typing as tp
import warnings

import torch

# oneDNN's ISA names, lowest first; bf16 matrix products are native from AVX512_CORE_BF16 on
_ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16")


@dataclasses.dataclass(frozen=True)
class CPUInfo:
    """What this CPU's matrix arithmetic can do, as torch will run it."""
    arch: str                 # 'x86_64', 'arm64', ...
    capability: str           # torch.backends.cpu.get_cpu_capability(): 'AVX2', 'AVX512', 'DEFAULT', ...
    bf16_native: bool         # bf16 matrix products run on bf16 hardware (else: a trap, see module doc)
    int8: bool                # PyTorch's quantized CPU kernels are in this build
    vnni: bool                # int8 products accumulate in 32 bits (no 16-bit saturation)
    how: str                  # 'cpuinfo' (flags) or 'measured'
    amx: bool = False         # AMX tiles (amx_bf16 / amx_int8): oneDNN's bf16 and int8 products run on them
    fp16_native: bool = False  # fp16 products in hardware (AVX512-FP16 or AMX-FP16): not a trap

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i386", "i686")

    def describe(self) -> str:
        """One phrase for messages: 'x86_64 AVX2, no native bf16, int8 without VNNI'."""
        parts = [f"{self.arch} {self.capability}", "native bf16" if self.bf16_native else "no native bf16"]
        if self.int8:
            parts.append("int8 with VNNI" if self.vnni else ("int8 without VNNI" if self.is_x86 else "int8"))
        if self.amx:
            parts.append("AMX")
        if self.fp16_native:
            parts.append("native fp16")
        return ", ".join(parts)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CPUInfo:
    """This CPU, read once per process (see the module docstring)."""
    arch = platform.machine().lower() or "unknown"
    capability = torch.backends.cpu.get_cpu_capability()
    int8 = bool(int8_engines())
    if arch in ("x86_64", "amd64"):
        flags = _x86_flags()
        if flags is not None:
            bf16 = bool({"avx512_bf16", "amx_bf16"} & flags) and not _masked_below("AVX512_CORE_BF16")
            vnni = int8 and not int8_saturates()
            amx = bool({"amx_bf16", "amx_int8"} & flags) and not _masked_below("AVX512_CORE_AMX")
            fp16 = bool({"avx512_fp16", "amx_fp16"} & flags) and not _masked_below("AVX512_CORE_FP16")
            return CPUInfo(arch, capability, bf16, int8, vnni, "cpuinfo", amx, fp16)
    rates = matmul_rates((torch.float32, torch.bfloat16))
    bf16 = rates[torch.bfloat16] > 1.5 * rates[torch.float32]
    return CPUInfo(arch, capability, bf16, int8, int8 and not int8_saturates(), "measured")


def _x86_flags() -> tp.Optional[tp.FrozenSet[str]]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _masked_below(isa: str) -> bool:
    """True when the user capped the kernels below `isa` (oneDNN's name) with ONEDNN_MAX_CPU_ISA or
    ATEN_CPU_CAPABILITY (which caps torch's own vector kernels; its 'avx2' / 'default' rule out AVX-512)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in ("ALL", "DEFAULT") and cap in _ONEDNN_ISAS:
        if _ONEDNN_ISAS.index(cap) < _ONEDNN_ISAS.index(isa):
            return True
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return aten in ("default", "avx2", "avx") and isa.startswith("AVX512")


def int8_engines() -> tp.List[str]:
    """PyTorch's quantized CPU engines in this build, best first for dynamic int8 linear layers."""
    engines = torch.backends.quantized.supported_engines
    return [name for name in ("x86", "fbgemm", "onednn", "qnnpack") if name in engines]


@contextlib.contextmanager
def quantized_engine(name: str):
    """Run the block with PyTorch's quantized engine set to `name`, then restore the previous one."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@functools.lru_cache(maxsize=None)
def int8_saturates(engine: tp.Optional[str] = None) -> bool:
    """Does the int8 kernel of `engine` (default: the first of `int8_engines()`) lose products to
    16-bit saturation (x86 without VNNI)? Runs the kernel on operands at the top of their ranges
    (u8 255 x s8 127: one pair is 64,770, over int16's 32,767) and checks the exact integer answer."""
    engines = int8_engines()
    if not engines:
        return False
    features = 64
    weight = torch.ones(4, features)
    x = torch.ones(2, features)
    with warnings.catch_warnings(), quantized_engine(engine or engines[0]):
        warnings.simplefilter("ignore")
        scales = torch.full((4,), 1.0 / 127, dtype=torch.double)
        qweight = torch.quantize_per_channel(weight, scales, torch.zeros(4, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qweight, None)
        y = torch.ops.quantized.linear_dynamic(x, packed, False)
    return not torch.allclose(y, torch.full_like(y, float(features)), rtol=1e-3)


@functools.lru_cache(maxsize=1)
def int_mm_exact() -> bool:
    """`torch._int_mm` (int8 x int8 -> int32, no packing) runs on this CPU and is exact at the top of the int8
    range (where a kernel that adds pairs in 16 bits would saturate). False where the op is missing or fails."""
    if not hasattr(torch, "_int_mm"):
        return False
    features = 64
    a = torch.full((32, features), 127, dtype=torch.int8)
    b = torch.full((features, 8), -127, dtype=torch.int8)
    try:
        with torch.inference_mode():
            out = torch._int_mm(a, b)
    except (RuntimeError, NotImplementedError):
        return False
    return out.dtype == torch.int32 and bool((out == -127 * 127 * features).all())


def matmul_rates(dtypes: tp.Sequence[torch.dtype], size: int = 512,
                 seconds: float = 0.05) -> tp.Dict[torch.dtype, float]:
    """GFLOP/s of a [size, size] @ [size, size] product in each dtype on this CPU (about 0.1 s each;
    stops early on a slow dtype)."""
    rates = {}
    with torch.inference_mode():
        for dtype in dtypes:
            a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
            a @ b  # warm-up
            count, start = 0, time.perf_counter()
            while True:
                a @ b
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            rates[dtype] = 2 * size ** 3 * count / elapsed / 1e9
    return rates


def cuda_bf16_native(device: tp.Union[str, torch.device, None] = None) -> bool:
    """bf16 runs on the GPU's tensor cores (compute capability >= 8.0, or a ROCm GPU that supports it)."""
    if not torch.cuda.is_available():
        return False
    if getattr(torch.version, "hip", None):
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability(device)[0] >= 8


def bf16_native(device: torch.device) -> bool:
    """bf16 matrix products are fast on `device`."""
    if device.type == "cuda":
        return cuda_bf16_native(device)
    if device.type == "cpu":
        return cpu_info().bf16_native
    return device.type == "mps" and _mps_bf16()


def _mps_bf16() -> bool:
    """MPS has bf16 from macOS 14."""
    release = platform.mac_ver()[0]
    try:
        return int(release.split(".")[0]) >= 14
    except ValueError:
        return False


def slow_dtype_reason(device: torch.device, dtype: torch.dtype) -> tp.Optional[str]:
    """Why `dtype` matrices would be a trap on `device` (a phrase), or None when they are fine."""
    if device.type != "cpu" or dtype == torch.float32:
        return None
    if dtype == torch.float16 and not cpu_info().fp16_native:
        return f"float16 matrix products run at about 1 GFLOP/s on CPU ({cpu_info().describe()})"
    if dtype == torch.bfloat16 and not cpu_info().bf16_native:
        return (f"this CPU has no native bf16 ({cpu_info().describe()}): bfloat16 matrix products run "
                f"10-100x slower than float32 here")
    return None


def mps_available() -> bool:
    """Whether this torch build has the Apple GPU backend and the machine has the GPU."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def describe_machine() -> str:
    """For logs and bug reports: torch, the CPU and the accelerators."""
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads",
             f"CPU: {cpu_name()}: {cpu_info().describe()}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            lines.append(f"cuda:{i}: {torch.cuda.get_device_name(i)}, compute capability {major}.{minor}, "
                         f"{'native' if cuda_bf16_native(i) else 'no native'} bf16")
    if mps_available():
        lines.append(f"mps: macOS {platform.mac_ver()[0]}")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name ('AMD EPYC'), for tables and logs."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()
