"""Decisions (STYLE §2: hardware.py says what the machine can do, this module decides what to use), for inference
and training alike: the device (`check_device`), the LM's dtype (`default_dtype`, `parse_dtype`) and a training
run's precision (`training_precision`), where the codec runs (`codec_device`), the generator checks, the
deterministic switch, and which kernels a model runs with (what `get_pretrained(..., fast=True)` loads).

On CPU the answer is measured, not guessed: the rules written from two CPUs picked a mode 1.3x slower than the
best on a third (issue 30). The transformer's matrices fall in two groups, the attention projections and the
feed-forward pair, and for each group every kernel this CPU can run is timed on the model's own shapes (one
decoding forward of the [conditional; null] batch at the model's window):

    float32      the exact kernels
    bfloat16     where the CPU has native bf16 (elsewhere a trap: hardware.slow_dtype_reason)
    int8:ENGINE  each PyTorch quantized engine in this build (x86, fbgemm, onednn) and torch._int_mm ('int_mm')
                 where it is exact here; for the attention group only while decoding codebook 0 ('int8-hybrid')

The fastest pair allowed by accuracy wins (`choose_kernels`): int8 attention projections only at codebook 0,
where they measured harmless (int8 everywhere measured 91.5% greedy agreement on the small architecture; every
allowed pair 95% or more). It is taken only when it beats the float32 kernels' time by FAST_MARGIN; otherwise
fast mode is float32 with banded attention, so fast is never slower than exact. The timings and the choice are
cached per CPU model and torch version in the user cache dir (`user_cache_dir()`), so the measurement (a few
seconds) happens once per machine; recheck=True (`--fast-recheck`) measures again.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import torch
import torch.nn.functional as F

from . import hardware
from .hardware import bf16_native, cpu_info, cpu_name, cuda_bf16_native, int8_saturates, mps_available, \
    slow_dtype_reason
from .lm import MagnetLM
from .quantize import cast_float_matrices, int8_kernels, int8_linear, quantize_lm
from .quantize import check_mode as check_quantize_mode

logger = logging.getLogger("openmagnet")

GROUPS = ("attention", "feed_forward")
FLOAT_KERNELS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FAST_MARGIN = 0.95  # a fast mode must take at most this share of the float32 kernels' time
CODEBOOK0_SHARE = 0.4  # share of the default steps [20, 10, 10, 10] spent on codebook 0 (int8-hybrid attention)
CACHE_VERSION = 1
Timings = tp.Dict[str, tp.Dict[str, float]]  # group -> kernel -> seconds per decoding forward


# ------------------------------------------------------------------------------------------ device and dtype
def default_device(mps: bool = True) -> torch.device:
    """cuda, then mps (unless `mps=False`: training's default), then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps and mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device: tp.Union[str, torch.device, None],
                 fix: str = "use device='cpu', or device=None for the best available") -> torch.device:
    """The device to run on (None: `default_device()`), or a one-line ValueError ending in `fix` when
    it is not a device name or this machine lacks it (the CLI, the app and training pass their own `fix`)."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: {fix}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CUDA is not available on this machine (no NVIDIA GPU, or a CPU-only torch build): {fix}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"there is no GPU {device} on this machine ({torch.cuda.device_count()} found): {fix}")
    if device.type == "mps" and not mps_available():
        raise ValueError(f"MPS (the Apple GPU) is not available on this machine: {fix}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported: {fix}")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU and MPS; on CUDA bfloat16 where the GPU runs it natively (compute capability
    8.0 on), float16 otherwise (T4, V100: `torch.cuda.is_bf16_supported()` counts their emulated,
    slow bf16)."""
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native(device) else torch.float16
    return torch.float32


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16}


def parse_dtype(dtype: tp.Union[str, torch.dtype]) -> torch.dtype:
    """torch.float32, bfloat16 or float16 from a dtype or its name ('bf16', 'half', ...); ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of float32, bfloat16, float16; got {dtype!r}")


def training_precision(precision: str, device: torch.device) -> tp.Tuple[str, tp.Optional[str]]:
    """(the autocast precision a training run uses on `device`, why it would be slower than fp32 there or None).
    'auto' is fp16 on CUDA (with a gradient scaler, as the released runs), bf16 on a CPU with native bf16
    matrix products, fp32 elsewhere; fp16 on a CPU, or bf16 on one without native bf16, is the trap."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16", None
        return ("bf16" if device.type == "cpu" and hardware.cpu_info().bf16_native else "fp32"), None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return precision, hardware.slow_dtype_reason(device, dtype) if dtype is not None else None


def codec_device(device: tp.Union[str, torch.device], mac_version: tp.Optional[str] = None,
                 torch_version: tp.Optional[str] = None) -> torch.device:
    """Where the codec runs for a model on `device`: the same device, except on MPS before macOS 15.1
    or torch 2.6, which refuse (or, before torch 2.5, miscompute) a convolution with an output
    dimension over 65536 (pytorch#129207, #140726), and a 10 s clip is 320,000 samples: there the
    codec runs on the CPU. mac_version / torch_version ('14.6.1', '2.5.1+cpu'): default this machine's."""
    device = torch.device(device)
    if device.type != "mps":
        return device
    mac = _release(platform.mac_ver()[0] if mac_version is None else mac_version)
    torch_release = _release(torch.__version__ if torch_version is None else torch_version)
    return device if mac >= (15, 1) and torch_release >= (2, 6) else torch.device("cpu")


def _release(version: str) -> tp.Tuple[int, ...]:
    """(15, 1) from '15.1', (2, 6, 0) from '2.6.0+cpu'; () when unreadable (sorts before any release)."""
    found = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in found.group(0).split(".")) if found else ()


def check_generator(generator: tp.Optional[torch.Generator], device: torch.device) -> None:
    """Sampling draws its random numbers on `device`: a generator must live there too (torch
    otherwise fails mid-generation with "Expected a 'cuda' device type for generator")."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_generator_device(generator.device, device)


def check_generator_device(generator_device: torch.device, model_device: torch.device) -> None:
    if generator_device.type != model_device.type or (
            None not in (generator_device.index, model_device.index) and generator_device.index != model_device.index):
        raise ValueError(f"the generator is on {generator_device} but the model samples on {model_device}: "
                         f"create it there, e.g. torch.Generator(device=model.device).manual_seed(0)")


def seeded_generator(seed: tp.Optional[int], device: torch.device) -> tp.Optional[torch.Generator]:
    """A generator on `device` seeded with `seed` (None: None, torch's global random state)."""
    return None if seed is None else torch.Generator(device=device).manual_seed(int(seed))


def deterministic(enabled: bool = True) -> None:
    """Repeatable CUDA runs (CPU runs already are): deterministic kernels only (a kernel without one
    raises), no cuDNN autotuning, no TF32 in matrix products and convolutions, and
    CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset (cuBLAS reads it once: call this before the first CUDA
    work). Slower. Runs then repeat on the same GPU, driver and torch, but still differ from CPU runs
    (other kernels, other summation order), and bf16 (the CUDA default) from float32.
    enabled=False restores torch's defaults."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.allow_tf32 = not enabled
    torch.set_float32_matmul_precision("highest")


# ------------------------------------------------------------------------------------------ the cache dir
def user_cache_dir() -> Path:
    """Where openmagnet keeps what it measured about this machine: $OPENMAGNET_CACHE, else the platform's user
    cache folder ($XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)
    + /openmagnet."""
    if os.environ.get("OPENMAGNET_CACHE"):
        return Path(os.environ["OPENMAGNET_CACHE"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "openmagnet"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "openmagnet" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openmagnet"


@dataclasses.dataclass(frozen=True)
class FastMode:
    """What `get_pretrained(..., fast=True)` loads on a device, and why. attention / feed_forward: the kernel of
    each group of matrices ('float32', 'bfloat16', 'float16', or 'int8:ENGINE', which for the attention means
    int8 while decoding codebook 0 and float32 otherwise)."""
    attention: str
    feed_forward: str
    banded_attention: tp.Optional[bool]
    why: str
    timings: tp.Optional[Timings] = None  # what was measured (None: decided without measuring)

    @property
    def engine(self) -> tp.Optional[str]:
        """The int8 kernel, or None."""
        for kernel in (self.feed_forward, self.attention):
            if kernel.startswith("int8:"):
                return kernel.split(":", 1)[1]
        return None

    @property
    def quantize(self) -> tp.Optional[str]:
        if self.attention.startswith("int8:"):
            return "int8-hybrid"
        return "int8" if self.feed_forward.startswith("int8:") else None

    @property
    def dtype(self) -> torch.dtype:
        """The attention projections' float dtype (also the feed-forward's unless `ffn_dtype` differs)."""
        return FLOAT_KERNELS.get(self.attention, torch.float32)

    @property
    def ffn_dtype(self) -> tp.Optional[torch.dtype]:
        """The feed-forward matrices' float dtype (None when they are int8)."""
        return FLOAT_KERNELS.get(self.feed_forward)

    @property
    def speedup(self) -> tp.Optional[float]:
        """How much faster than the float32 kernels the chosen ones measured (None: not measured)."""
        if self.timings is None:
            return None
        return group_cost(self.timings, "float32", "float32") / group_cost(self.timings, self.attention,
                                                                          self.feed_forward)

    def describe(self) -> str:
        return describe_kernels(self.attention, self.feed_forward)

    def __str__(self) -> str:
        return f"{self.describe()} ({self.why})"


def describe_kernels(attention: str, feed_forward: str) -> str:
    """'int8 feed-forward (onednn) + bfloat16 attention', 'bfloat16', ..."""
    if attention.startswith("int8:"):
        return f"{_kernel_name(feed_forward)} feed-forward + float32 attention (int8 for codebook 0)"
    if attention == feed_forward:
        return attention
    return f"{_kernel_name(feed_forward)} feed-forward + {attention} attention"


def _kernel_name(kernel: str) -> str:
    return f"int8 ({kernel[5:]})" if kernel.startswith("int8:") else kernel


def describe_mode(dtype: tp.Optional[torch.dtype], quantize: tp.Optional[str], engine: tp.Optional[str] = None,
                  ffn_dtype: tp.Optional[torch.dtype] = None) -> str:
    """'int8 feed-forward + float32 attention', 'bfloat16', ... (the LM's matrices); the int8 kernel in
    brackets when given, the feed-forward's float dtype when it differs from the attention's."""
    name = str(dtype or torch.float32).replace("torch.", "")
    int8 = f"int8 ({engine})" if engine else "int8"
    if quantize == "int8":
        return f"{int8} feed-forward + {name} attention"
    if quantize == "int8-hybrid":
        return f"{int8} feed-forward + {name} attention (int8 for codebook 0)"
    if quantize == "int8-all":
        return f"{int8} (every matrix)"
    if ffn_dtype is not None and ffn_dtype != (dtype or torch.float32):
        return f"{str(ffn_dtype).replace('torch.', '')} feed-forward + {name} attention"
    return name


def describe_lm(lm: MagnetLM) -> str:
    """How `lm` runs: 'float32 (exact)', 'int8 feed-forward + float32 attention, banded attention', ..."""
    ffn = lm.transformer.layers[0].linear1.weight
    text = describe_mode(lm.dtype, lm.quantized, lm.int8_engine, None if ffn.is_meta else ffn.dtype)
    cpu = lm.device.type == "cpu"
    if lm.quantized and cpu and lm.int8_engine != "int_mm" and int8_saturates(lm.int8_engine):
        text += ", int8 weights fitted to 16-bit pairs (no VNNI)"
    if lm.banded_attention:
        text += ", banded attention"
    elif lm.dtype == ffn.dtype == torch.float32 and not lm.quantized and cpu:
        text += " (exact)"
    return text


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """How `MAGNeT.get_pretrained` loads: the device, the LM matrices' dtype, the fast mode chosen by rule (off
    CPU) or `measure` (on CPU: timed on the loaded LM), and banded attention."""
    device: torch.device
    dtype: torch.dtype
    mode: tp.Optional[FastMode]
    measure: bool
    banded_attention: tp.Optional[bool]


def load_plan(device: tp.Union[str, torch.device, None], dtype: tp.Union[str, torch.dtype, None],
              quantize: tp.Optional[str], fast: bool, fast_recheck: bool, compile: bool,
              banded_attention: tp.Optional[bool]) -> LoadPlan:
    """The loading options of `MAGNeT.get_pretrained` checked together and resolved for this machine, before any
    weight is read: one-line errors for the combinations that cannot run (or would run 10-100x slower)."""
    check_quantize_mode(quantize)  # everything below is checked before the (slow) loading
    if device is None and quantize is not None:
        device = "cpu"  # the int8 kernels are CPU kernels: do not load the LM onto a GPU first
    device = check_device(device)
    if quantize is not None and device.type != "cpu":
        raise ValueError(f"quantize={quantize!r} runs on CPU only, but device is {device}: use "
                         f"dtype=torch.bfloat16 or torch.float16 on {device.type}, or device='cpu'")
    if fast_recheck and not fast:
        raise ValueError("fast_recheck=True measures the kernels of fast mode again: add fast=True")
    exact = dtype is None and device.type != "cuda" or dtype is not None and parse_dtype(dtype) == torch.float32
    if compile and not fast and quantize is None and exact:
        raise ValueError("compile=True changes the float arithmetic, and exact float32 stays uncompiled "
                         "(bit-identical to audiocraft): add fast=True (or dtype= / quantize=)")
    mode = None
    measure = fast and device.type == "cpu"  # the CPU's kernels are timed on the loaded model
    if fast:
        if dtype is not None or quantize is not None:
            raise ValueError("fast=True chooses dtype and quantize for this machine: drop dtype= and quantize=, "
                             "or drop fast=True")
        if not measure:
            mode = fast_mode(device)
            dtype = mode.dtype
        if banded_attention is None:
            banded_attention = True if measure else mode.banded_attention
    if quantize == "int8-all" and dtype is not None and parse_dtype(dtype) != torch.float32:
        raise ValueError(f"quantize='int8-all' leaves no matrix in dtype={dtype!r}: drop dtype, or use "
                         f"quantize='int8' to keep the attention projections in that dtype")
    if dtype is not None:
        dtype = parse_dtype(dtype)
    elif quantize in ("int8", "int8-hybrid"):  # the attention projections: bf16 where the CPU runs it natively
        dtype = torch.bfloat16 if bf16_native(device) else torch.float32
    else:
        dtype = torch.float32 if quantize is not None or measure else default_dtype(device)
    reason = slow_dtype_reason(device, dtype)
    if reason is not None:
        raise ValueError(f"dtype={dtype} on CPU is a trap: {reason}: use fast=True (it measures what this CPU "
                         f"runs fastest) or the default float32")
    return LoadPlan(device, dtype, mode, measure, banded_attention)


# ------------------------------------------------------------------------------------------ the decision
def candidates() -> tp.Dict[str, tp.List[str]]:
    """Per group, the kernels worth timing on this CPU (the trap refusals apply: bf16 only where native)."""
    cpu = cpu_info()
    floats = ["float32"] + (["bfloat16"] if cpu.bf16_native else [])
    int8 = [f"int8:{kernel}" for kernel in int8_kernels() if not (kernel == "qnnpack" and cpu.is_x86)]  # ARM's
    return {"attention": floats + int8, "feed_forward": floats + int8}


def allowed(attention: str, feed_forward: str) -> bool:
    """The pairs that keep >= 95% greedy agreement on the small architecture: any float kernels, int8
    feed-forward, and int8 attention only with the same int8 feed-forward (int8-hybrid: codebook 0 only)."""
    if attention.startswith("int8:"):
        return feed_forward == attention
    return True


def group_cost(timings: Timings, attention: str, feed_forward: str,
               codebook0_share: float = CODEBOOK0_SHARE) -> float:
    """Seconds per decoding forward of the two groups' matrices with these kernels; int8 attention runs at
    codebook 0 only (`codebook0_share` of the steps), float32 elsewhere."""
    if attention.startswith("int8:"):
        att = (codebook0_share * timings["attention"][attention]
               + (1 - codebook0_share) * timings["attention"]["float32"])
    else:
        att = timings["attention"][attention]
    return att + timings["feed_forward"][feed_forward]


def choose_kernels(timings: Timings, margin: float = FAST_MARGIN) -> tp.Tuple[str, str]:
    """(attention kernel, feed-forward kernel): the allowed pair of least measured time; ('float32', 'float32')
    unless that pair takes at most `margin` of the float32 kernels' time. Pure: the timings are given."""
    exact = group_cost(timings, "float32", "float32")
    best, best_cost = ("float32", "float32"), exact
    for attention in timings["attention"]:
        for feed_forward in timings["feed_forward"]:
            if allowed(attention, feed_forward):
                cost = group_cost(timings, attention, feed_forward)
                if cost < best_cost:
                    best, best_cost = (attention, feed_forward), cost
    return best if best_cost <= margin * exact else ("float32", "float32")


# ------------------------------------------------------------------------------------------ the measurement
def _float_proj(weight: torch.Tensor, dtype: torch.dtype, cast_in: bool, cast_out: bool):
    w = weight.to(dtype)

    def run(x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(dtype) if cast_in else x, w)
        return y.float() if cast_out else y
    return run


def _group_work(lm: MagnetLM, group: str, kernel: str, rows: int) -> tp.Callable[[], torch.Tensor]:
    """One decoding forward's worth of `group`'s matrix products for one layer, with `kernel`, on random
    activations: rows = the [conditional; null] batch of one clip (the cross-attention runs on half of them).
    The casts a float kernel adds in the model (into the matrices' dtype, back to the float32 residual) are
    timed with it."""
    layer = lm.transformer.layers[0]
    D = layer.linear1.weight.shape[1]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, D, generator=gen)
    if kernel.startswith("int8:"):
        engine = kernel[5:]
        saturating = engine != "int_mm" and int8_saturates(engine)

        def make(weight: torch.Tensor, cast_in: bool, cast_out: bool):
            return int8_linear(weight, engine, saturating)
        dtype = torch.float32
    else:
        dtype = FLOAT_KERNELS[kernel]

        def make(weight: torch.Tensor, cast_in: bool, cast_out: bool):
            return _float_proj(weight, dtype, cast_in, cast_out)
    if group == "feed_forward":
        linear1 = make(layer.linear1.weight, True, False)
        linear2 = make(layer.linear2.weight, False, True)

        def run() -> torch.Tensor:
            return linear2(F.gelu(linear1(x)))
        return run
    attn, cross = layer.self_attn, layer.cross_attention
    qkv = make(attn.in_proj_weight, True, False)
    out = make(attn.out_proj.weight, False, True)
    q = make(cross.in_proj_weight[:D], True, False)
    cross_out = make(cross.out_proj.weight, False, True)
    inner = x.to(dtype)

    def run() -> torch.Tensor:
        qkv(x)
        out(inner)
        q(x[:rows // 2])
        return cross_out(inner[:rows // 2])
    return run


def time_kernels(lm: MagnetLM, kernels: tp.Optional[tp.Dict[str, tp.List[str]]] = None, repeats: int = 3,
                 clock: tp.Callable[[], float] = time.perf_counter) -> Timings:
    """Seconds per decoding forward (all layers) of each group with each kernel, on `lm`'s shapes (its float32
    matrices of layer 0; the [conditional; null] rows of one clip at the model's window): the median of
    `repeats` rounds after a warm-up, the kernels interleaved so that a busy machine slows them alike."""
    kernels = kernels or candidates()
    rows = 2 * lm.cfg.seq_len
    layers = len(lm.transformer.layers)
    work = {(g, k): _group_work(lm, g, k, rows) for g in GROUPS for k in kernels[g]}
    samples: tp.Dict[tp.Tuple[str, str], tp.List[float]] = {key: [] for key in work}
    with torch.inference_mode():
        for run in work.values():
            run()
        for _ in range(repeats):
            for key, run in work.items():
                start = clock()
                run()
                samples[key].append(clock() - start)
    return {g: {k: statistics.median(samples[(g, k)]) * layers for k in kernels[g]} for g in GROUPS}


# ------------------------------------------------------------------------------------------ the cache
def _cache_file() -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_name()).strip("-").lower() or "cpu"
    return user_cache_dir() / "kernels" / f"{slug}-torch-{torch.__version__.replace('+', '-')}.json"


def _cache_key(lm: MagnetLM) -> str:
    layer = lm.transformer.layers[0]
    D, H = layer.linear1.weight.shape[1], layer.linear1.weight.shape[0]
    return (f"v{CACHE_VERSION} dim={D} hidden={H} frames={lm.cfg.seq_len} threads={torch.get_num_threads()} "
            f"cpu=[{cpu_info().describe()}]")


def _read_cache(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _valid_timings(timings: tp.Any, kernels: tp.Dict[str, tp.List[str]]) -> bool:
    """A cached entry is used only when it timed exactly the kernels this process can run."""
    try:
        return all(sorted(timings[g]) == sorted(kernels[g]) and all(float(v) > 0 for v in timings[g].values())
                   for g in GROUPS)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _write_cache(path: Path, entries: dict) -> None:
    """Atomically (a temporary file renamed over the old one); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".kernels-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not cache the kernel timings in %s: %s", path, exc)


def measured_timings(lm: MagnetLM, recheck: bool = False) -> tp.Tuple[Timings, str]:
    """The kernel timings for `lm`'s shapes on this machine, from the cache unless `recheck`, else measured
    now and cached. Returns (timings, where they come from)."""
    kernels = candidates()
    path, key = _cache_file(), _cache_key(lm)
    entries = _read_cache(path)
    entry = entries.get(key)
    if not recheck and isinstance(entry, dict) and _valid_timings(entry.get("timings"), kernels):
        return {g: {k: float(v) for k, v in entry["timings"][g].items()} for g in GROUPS}, f"cached in {path}"
    start = time.perf_counter()
    timings = time_kernels(lm, kernels)
    logger.info("timed the matrix kernels of this CPU in %.1f s", time.perf_counter() - start)
    entries[key] = {"timings": timings, "choice": list(choose_kernels(timings)), "torch": torch.__version__,
                    "cpu": cpu_name(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_cache(path, entries)
    return timings, f"measured now, cached in {path}"


# ------------------------------------------------------------------------------------------ fast mode
def fast_mode(device: tp.Union[str, torch.device], lm: tp.Optional[MagnetLM] = None,
              recheck: bool = False) -> FastMode:
    """The fastest mode that keeps at least 95% greedy-token agreement with exact float32 on `device`.

    CPU with `lm` (on the CPU, float32 matrices): measured on its shapes (see the module docstring), never
    slower than float32. CPU without `lm`: the guess from the CPU's flags alone (for messages; fast=True
    measures). CUDA: bf16 on compute capability >= 8, else fp16; MPS: float32 (nothing faster measured)."""
    device = torch.device(device)
    if device.type == "cuda":
        native = cuda_bf16_native(device)
        dtype = "bfloat16" if native else "float16"
        return FastMode(dtype, dtype, None, "CUDA with native bf16" if native else "CUDA without native bf16")
    if device.type != "cpu":
        return FastMode("float32", "float32", None, f"{device.type}: no faster mode measured")
    cpu = cpu_info()
    if lm is None:
        return _guess(cpu)
    timings, source = measured_timings(lm, recheck)
    attention, feed_forward = choose_kernels(timings)
    mode = FastMode(attention, feed_forward, True, "", timings)
    why = (f"{mode.speedup:.2f}x the float32 matrices' speed" if (attention, feed_forward) != ("float32", "float32")
           else f"no kernel beat float32 by {1 / FAST_MARGIN - 1:.0%}")
    return dataclasses.replace(mode, why=f"{cpu.describe()}: {why}, {source}")


def _guess(cpu) -> FastMode:
    """The rule of thumb from the CPU's flags (what the measurement usually finds)."""
    int8 = f"int8:{int8_kernels()[0]}" if cpu.int8 and int8_kernels() else None
    if int8 and cpu.bf16_native:
        return FastMode("bfloat16", int8, True, cpu.describe())
    if int8:
        return FastMode(int8, int8, True, cpu.describe())
    if cpu.bf16_native:
        return FastMode("bfloat16", "bfloat16", True, cpu.describe())
    return FastMode("float32", "float32", True, cpu.describe())


def apply_fast_mode(lm: MagnetLM, mode: FastMode) -> MagnetLM:
    """Put `lm` (float32 matrices) into `mode`, in place: int8 kernels where it says, then each group's
    float matrices in their dtype. Returns lm."""
    if mode.quantize is not None:
        quantize_lm(lm, mode.quantize, engine=mode.engine)
    cast_float_matrices(lm, mode.dtype, "attention")
    if mode.ffn_dtype is not None:
        cast_float_matrices(lm, mode.ffn_dtype, "feed_forward")
    return lm


TEXT_BUCKET = 32  # text positions: a compiled step serves every prompt length up to a multiple of this


def compile_lm(lm: MagnetLM, mode: tp.Optional[str] = None) -> MagnetLM:
    """Compile `lm`'s layers (`MagnetLM.run_layers`) with torch.compile for fixed shapes (dynamic=False): one
    graph per stage kind (codebook 0 / 1-3) and row count, built on first use (the compile time is spent then,
    tens of seconds on CPU) and reused for every step; the text is padded to TEXT_BUCKET positions
    (lm.pad_cross_kv, masked) so a new prompt length does not compile again. mode: torch.compile's
    ('reduce-overhead' on CUDA captures each step as a CUDA graph). Inference only; returns lm."""
    lm.compiled_layers = torch.compile(lm.run_layers, dynamic=False, mode=mode)
    return lm


def int8_kernel_choice(lm: MagnetLM) -> tp.Optional[str]:
    """The int8 kernel that measured fastest for `lm`'s feed-forward shapes (cached, see `measured_timings`),
    for quantize= by hand; None where this machine has none."""
    timings, _ = measured_timings(lm)
    int8 = {k: t for k, t in timings["feed_forward"].items() if k.startswith("int8:")}
    return min(int8, key=int8.get)[5:] if int8 else None
