"""GPU smoke test on the tiny golden fixtures (tests/fixtures): loading, generation, parity against
the CPU, the codec, training, the app engine and the CLI, on one device, in a few minutes.

    python bench/gpu_smoke.py                  # on cuda; writes bench/results/gpu_smoke_<gpu>.md/.json
    python bench/gpu_smoke.py --device cpu     # dry run of the script's logic (GPU-only checks skipped)
    python bench/gpu_smoke.py --only 4 7b      # some checks only, by number

Prints the machine, then ONE markdown table (check | result | detail); every check runs on its own
(a failure is recorded, with the exception's line, and the next check runs). Exits 1 when a check
failed. Results are written when --device is not cpu, or to --out (a .md path or a folder).

The fixtures are random-weight models in the released audiocraft layout; their T5s and the 32 kHz
EnCodec come from the fabricated Hugging Face cache tests/fixtures/hf_cache, copied to a temporary
folder and used offline (set up below, before transformers or openmagnet are imported).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
RESULTS = ROOT / "bench" / "results"
RNN_WARNING = "not part of single contiguous chunk"  # cuDNN: "RNN module weights are not part of ..."


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (dry run); default cuda")
    p.add_argument("--out", default=None, help="where to write the results (.md path or folder); "
                                               "default bench/results/ when the device is not cpu")
    p.add_argument("--only", nargs="+", default=None, metavar="N",
                   help="run only these checks, by number (1 2 ... 7a 7b 8 9 10)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    return p.parse_args(argv)


ARGS = parse_args()

# ---- the offline hub, before transformers / huggingface_hub / openmagnet are imported (as tests/conftest.py)
_TMP = Path(tempfile.mkdtemp(prefix="openmagnet-gpu-smoke-"))
HUB_CACHE = _TMP / "hub"
shutil.copytree(FIXTURES / "hf_cache", HUB_CACHE)
os.environ["HF_HUB_CACHE"] = str(HUB_CACHE)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import openmagnet  # noqa: E402
from openmagnet import runtime  # noqa: E402
from openmagnet.api import MAGNeT  # noqa: E402
from openmagnet.checkpoint import read as checkpoint_read  # noqa: E402
from openmagnet.hardware import bf16_native, cuda_bf16_native, describe_machine  # noqa: E402

DEV = torch.device(ARGS.device)
CUDA = DEV.type == "cuda"
QUICK = not CUDA  # the CPU dry run: 2-s clips and few decoding steps
GEN_STEPS = (20, 10, 10, 10) if CUDA else (2, 1, 1, 1)
GEN_SECONDS = None if CUDA else 2.0  # None: the model's full length
if ARGS.threads:
    torch.set_num_threads(ARGS.threads)


# ------------------------------------------------------------------------------------------- helpers
class Skip(Exception):
    """The check cannot run here; the message is the reason."""


class Ctx:
    """What one check found: notes (numbers) and failed expectations (a check fails if any)."""

    def __init__(self):
        self.notes: list = []
        self.failures: list = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def expect(self, cond, what: str) -> bool:
        if not cond:
            self.failures.append("FAILED " + what)
        return bool(cond)


def needs_cuda() -> None:
    if not CUDA:
        raise Skip("needs CUDA")


def sync() -> None:
    if CUDA and torch.cuda.is_available():
        torch.cuda.synchronize(DEV)


def free() -> None:
    import gc

    gc.collect()
    if CUDA and torch.cuda.is_available():
        torch.cuda.empty_cache()


def error_line(exc: BaseException) -> str:
    """The traceback's last line (the exception and the first line of its message), and where it was raised."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
    return (text[0] if text else type(exc).__name__)[:300] + where


def one_line(exc: BaseException) -> bool:
    return "\n" not in str(exc).strip() and len(str(exc).strip()) > 0


def fmt(x: float) -> str:
    return f"{x:.2e}" if x != 0 else "0"


def dname(dtype) -> str:
    return str(dtype).replace("torch.", "")


def params_devices(module) -> set:
    return {str(p.device) for p in module.parameters()} | {str(b.device) for b in module.buffers()}


def on_device(module) -> bool:
    devs = {torch.device(d) for d in params_devices(module)}
    return bool(devs) and all(d.type == DEV.type and (DEV.index is None or d.index == DEV.index) for d in devs)


def ref(name: str) -> dict:
    return torch.load(FIXTURES / name / "reference.pt", weights_only=True)


def meta(name: str) -> dict:
    return json.loads((FIXTURES / name / "reference.json").read_text())


_MODELS: dict = {}


def model_on(name: str, device: torch.device = None, dtype=None) -> MAGNeT:
    """A loaded fixture (cached; generation settings reset)."""
    device = device or DEV
    key = (name, str(device), str(dtype))
    if key not in _MODELS:
        _MODELS[key] = MAGNeT.get_pretrained(FIXTURES / name, device=device, dtype=dtype)
    model = _MODELS[key]
    model.set_generation_params()
    model.duration = model.max_duration
    model.set_custom_progress_callback(None)
    return model


def gen(seed: int = 0):
    return torch.Generator(device=DEV).manual_seed(seed)


def expected_dtype() -> torch.dtype:
    if CUDA:
        return torch.bfloat16 if cuda_bf16_native(DEV) else torch.float16
    return torch.float32


# ---------------------------------------------------------------------------------------------- checks
def check_loading(ctx: Ctx) -> None:
    """1. get_pretrained on the device: dtype, codec and T5 on the device, no cuDNN RNN warning on decode."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as load_warnings:
        warnings.simplefilter("always")
        model = MAGNeT.get_pretrained(FIXTURES / "music10", device=DEV)
        sync()
    ctx.note(f"load {time.perf_counter() - t0:.1f} s")
    _MODELS[("music10", str(DEV), "None")] = model
    dtype = model.lm.dtype
    want = expected_dtype()
    if CUDA:
        major, minor = torch.cuda.get_device_capability(DEV)
        ctx.note(f"cc {major}.{minor}")
        if major >= 8 and not getattr(torch.version, "hip", None):
            ctx.expect(dtype == torch.bfloat16, f"bf16 expected on compute capability >= 8, got {dname(dtype)}")
    ctx.note(f"lm dtype {dname(dtype)} (runtime.default_dtype {dname(runtime.default_dtype(DEV))})")
    ctx.expect(dtype == want, f"lm dtype {dname(dtype)} != {dname(want)}")
    ctx.expect(dtype == runtime.default_dtype(DEV), "lm dtype != runtime.default_dtype(device)")
    ctx.expect(on_device(model.lm), f"lm on {params_devices(model.lm)}")
    ctx.expect(on_device(model.compression_model), f"codec on {params_devices(model.compression_model)}")
    codec_dtypes = {dname(p.dtype) for p in model.compression_model.parameters()}
    ctx.note(f"codec {'/'.join(sorted(codec_dtypes))} on {'/'.join(sorted(params_devices(model.compression_model)))}")
    t0 = time.perf_counter()
    model.conditioner.cfg_condition(["happy rock"])  # first use loads the T5
    sync()
    encoder = getattr(model.conditioner, "t5", None) or model.conditioner.encoder
    ctx.note(f"T5 load+encode {time.perf_counter() - t0:.1f} s, on {'/'.join(sorted(params_devices(encoder)))}")
    ctx.expect(on_device(encoder), f"T5 on {params_devices(encoder)}")
    codes = torch.randint(0, model.cfg.card, (2, model.cfg.n_q, int(model.max_duration * model.frame_rate)),
                          generator=torch.Generator().manual_seed(0)).to(DEV)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        audio = model.generate_audio(codes)
        audio = model.generate_audio(codes)  # twice: a warning may come on the second call only
        sync()
    ctx.note(f"decode {time.perf_counter() - t0:.2f} s")
    rnn = [str(w.message) for w in list(caught) + list(load_warnings) if RNN_WARNING in str(w.message)]
    ctx.expect(not rnn, f"cuDNN RNN warning: {rnn[:1]}")
    others = sorted({str(w.message).splitlines()[0][:80] for w in caught if RNN_WARNING not in str(w.message)})
    ctx.note(f"warnings during decode: {len(caught)}" + (f" ({others[0]})" if others else ""))
    hop = model.sample_rate // int(model.frame_rate)
    ctx.expect(tuple(audio.shape) == (2, 1, codes.shape[-1] * hop), f"decoded shape {tuple(audio.shape)}")
    ctx.expect(audio.device.type == DEV.type and bool(torch.isfinite(audio).all()), "decoded audio finite, on device")


def check_generation(ctx: Ctx) -> None:
    """2. generate / unconditional / continuation x span arrangement x sampling mode, seeded on the device."""
    model = model_on("music10")
    r, m = ref("music10"), meta("music10")
    prompt, prompt_sr = r["cont_prompt_wav"].float(), m["cont_prompt_sample_rate"]
    descriptions = m["gen_descriptions"]
    modes = {"top_p": dict(use_sampling=True, top_p=0.9, top_k=0),
             "top_k": dict(use_sampling=True, top_p=0.0, top_k=250),
             "greedy": dict(use_sampling=False)}
    calls = {"generate": lambda g: model.generate(descriptions, return_tokens=True, generator=g),
             "uncond": lambda g: model.generate_unconditional(2, return_tokens=True, generator=g),
             "continuation": lambda g: model.generate_continuation(prompt, prompt_sr, descriptions,
                                                                   return_tokens=True, generator=g)}
    hop = model.sample_rate // int(model.frame_rate)
    card, n_q, span = model.cfg.card, model.cfg.n_q, model.cfg.span_len
    runs, repro, times = 0, 0, []
    for arrangement in ("nonoverlap", "stride1"):
        for mode, kw in modes.items():
            model.set_generation_params(decoding_steps=GEN_STEPS, span_arrangement=arrangement, **kw)
            if GEN_SECONDS is not None:
                model.duration = GEN_SECONDS
            seq_len = int(model.duration * model.frame_rate)
            want_t = seq_len if arrangement == "stride1" else seq_len - seq_len % span
            for call_name, call in calls.items():
                tag = f"{call_name}/{arrangement}/{mode}"
                try:
                    t0 = time.perf_counter()
                    audio, tokens = call(gen(0))
                    sync()
                    times.append(time.perf_counter() - t0)
                    _, again = call(gen(0))
                    runs += 1
                except Exception as exc:  # noqa: BLE001 - one combination failing does not stop the others
                    ctx.expect(False, f"{tag}: {error_line(exc)}")
                    continue
                ok = ctx.expect(tuple(tokens.shape) == (2, n_q, want_t), f"{tag} tokens shape {tuple(tokens.shape)}")
                ok &= ctx.expect(tuple(audio.shape) == (2, 1, tokens.shape[-1] * hop),
                                 f"{tag} audio shape {tuple(audio.shape)}")
                ok &= ctx.expect(bool(torch.isfinite(audio).all()), f"{tag} audio not finite")
                ok &= ctx.expect(audio.dtype == torch.float32, f"{tag} audio dtype {audio.dtype}")
                ok &= ctx.expect(audio.device.type == DEV.type and tokens.device.type == DEV.type,
                                 f"{tag} outputs on {audio.device}/{tokens.device}")
                ok &= ctx.expect(int(tokens.min()) >= 0 and int(tokens.max()) < card,
                                 f"{tag} tokens in [{int(tokens.min())}, {int(tokens.max())}]")
                same = torch.equal(tokens, again)
                repro += same
                ctx.expect(same, f"{tag} not reproducible with the same seed "
                                 f"({(tokens != again).float().mean().item():.1%} tokens differ)")
    seconds = model.duration
    ctx.note(f"{runs}/18 combinations ran (x2 for the seed), reproducible {repro}/{runs}; "
             f"{seconds:g} s clips, steps {list(GEN_STEPS)}; per call mean {sum(times) / max(len(times), 1):.2f} s, "
             f"max {max(times, default=0):.2f} s")
    # different seeds should differ when sampling (a generator that is ignored would not)
    model.set_generation_params(decoding_steps=GEN_STEPS, span_arrangement="stride1", use_sampling=True)
    if GEN_SECONDS is not None:
        model.duration = GEN_SECONDS
    _, a = model.generate(descriptions, return_tokens=True, generator=gen(0))
    _, b = model.generate(descriptions, return_tokens=True, generator=gen(1))
    ctx.expect(not torch.equal(a, b), "seeds 0 and 1 gave the same tokens")


def check_generator_device(ctx: Ctx) -> None:
    """3. A CPU generator with a CUDA model: the clear one-line ValueError."""
    needs_cuda()
    model = model_on("music10")
    model.set_generation_params(decoding_steps=(1, 1, 1, 1))
    r, m = ref("music10"), meta("music10")
    for name, call in {
        "generate": lambda g: model.generate(["happy rock"], generator=g),
        "continuation": lambda g: model.generate_continuation(r["cont_prompt_wav"].float(),
                                                              m["cont_prompt_sample_rate"], ["x", "y"], generator=g),
    }.items():
        try:
            call(torch.Generator().manual_seed(0))
        except ValueError as exc:
            msg = str(exc)
            ctx.expect(one_line(exc), f"{name}: message is not one line")
            ctx.expect("torch.Generator(device=model.device)" in msg, f"{name}: message lacks the fix: {msg[:120]}")
            if name == "generate":
                ctx.note(f"ValueError: {msg[:160]}")
        except Exception as exc:  # noqa: BLE001
            ctx.expect(False, f"{name}: {error_line(exc)} instead of ValueError")
        else:
            ctx.expect(False, f"{name}: no error with a CPU generator")
    try:
        runtime.check_generator(torch.Generator(device=DEV), model.device)
        ctx.note("a generator on the device passes")
    except Exception as exc:  # noqa: BLE001
        ctx.expect(False, f"device generator refused: {error_line(exc)}")


def check_stage_logits(ctx: Ctx) -> None:
    """4. stage_logits on the device (float32, bfloat16, float16) against CPU float32, stages 0..3."""
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    worst = {d: [0.0, 1.0, ""] for d in dtypes}  # max abs err, min argmax agreement, where
    refused = {}  # dtype -> why (the CPU refuses its slow dtypes by design)
    golden = 0.0
    for name in ("music10", "music30", "music10_hf", "sound10"):
        r, prompts = ref(name), meta(name)["parity_prompts"]
        cpu = model_on(name, torch.device("cpu"))
        with torch.inference_mode():
            cond_cpu = cpu.conditioner.cfg_condition(prompts)
            expected = [cpu.lm.stage_logits(r[f"input_stage{s}"].long(), cond_cpu, s).float() for s in range(4)]
        stride = meta(name)["col_stride"]
        for s in range(4):
            golden = max(golden, (expected[s][..., ::stride] - r[f"logits_stage{s}_cols"]).abs().max().item())
        for dtype in dtypes:
            if dtype in refused:
                continue
            try:
                model = MAGNeT.get_pretrained(FIXTURES / name, device=DEV, dtype=dtype)
            except ValueError as exc:
                if CUDA or dtype == torch.float32:
                    raise
                refused[dtype] = str(exc)[:70]
                continue
            ctx.expect(model.lm.dtype == dtype, f"{name}: asked {dname(dtype)}, got {dname(model.lm.dtype)}")
            with torch.inference_mode():
                cond = model.conditioner.cfg_condition(prompts)
                for s in range(4):
                    logits = model.lm.stage_logits(r[f"input_stage{s}"].long().to(DEV), cond, s).float().cpu()
                    ctx.expect(bool(torch.isfinite(logits).all()), f"{name} {dname(dtype)} stage {s}: not finite")
                    err = (logits - expected[s]).abs().max().item()
                    agree = (logits.argmax(-1) == expected[s].argmax(-1)).float().mean().item()
                    if err > worst[dtype][0]:
                        worst[dtype][0], worst[dtype][2] = err, f"{name}/s{s}"
                    worst[dtype][1] = min(worst[dtype][1], agree)
            del model
            free()
    ctx.note(f"4 fixtures x 4 stages; CPU fp32 vs golden max err {fmt(golden)}")
    ctx.expect(golden < 1e-3, "CPU float32 no longer matches the golden logits")
    for dtype in dtypes:
        if dtype in refused:
            ctx.note(f"{dname(dtype)}: refused on {DEV.type} by design ({refused[dtype]}...)")
            continue
        err, agree, where = worst[dtype]
        ctx.note(f"{dname(dtype)}: max err {fmt(err)} ({where or '-'}), argmax agreement min {agree:.1%}")
        if dtype == torch.float32:
            ctx.expect(err < 1e-3, f"float32 max err {fmt(err)} >= 1e-3")
        else:
            ctx.expect(agree >= 0.9, f"{dname(dtype)} argmax agreement {agree:.1%} < 90%")


def check_codec(ctx: Ctx) -> None:
    """5. Codec decode/encode on the device against the CPU (and the golden audio)."""
    if CUDA:
        ctx.note(f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}")
    for name in ("music10", "sound10", "music10_hf"):
        r = ref(name)
        cpu = model_on(name, torch.device("cpu")).compression_model
        dev = model_on(name).compression_model
        ctx.expect(on_device(dev), f"{name}: codec on {params_devices(dev)}")
        with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio_cpu = cpu.decode(r["codec_decode_codes"].long())
            codes_cpu = cpu.encode(r["codec_encode_audio"].float())
            t0 = time.perf_counter()
            audio = dev.decode(r["codec_decode_codes"].long().to(DEV))
            codes = dev.encode(r["codec_encode_audio"].float().to(DEV))
            sync()
            seconds = time.perf_counter() - t0
        codes, codes_cpu = (c[0] if isinstance(c, tuple) else c for c in (codes, codes_cpu))
        ctx.expect(audio.device.type == DEV.type and codes.device.type == DEV.type, f"{name}: outputs not on device")
        audio, codes = audio.float().cpu(), codes.cpu()
        err = (audio - audio_cpu).abs().max().item()
        gold = (audio - r["codec_decode_audio"].float()).abs().max().item()
        agree = (codes == codes_cpu).float().mean().item()
        gold_codes = (codes == r["codec_encode_codes"].long()).float().mean().item()
        rnn = [str(w.message) for w in caught if RNN_WARNING in str(w.message)]
        ctx.note(f"{name}: audio max err {fmt(err)} (vs golden {fmt(gold)}), codes agree {agree:.1%} "
                 f"(golden {gold_codes:.1%}), {seconds:.2f} s")
        ctx.expect(tuple(audio.shape) == tuple(audio_cpu.shape), f"{name}: shape {tuple(audio.shape)}")
        ctx.expect(bool(torch.isfinite(audio).all()), f"{name}: audio not finite")
        ctx.expect(err < 1e-2, f"{name}: audio max err {fmt(err)} >= 1e-2")
        ctx.expect(agree >= 0.9, f"{name}: code agreement {agree:.1%} < 90%")
        ctx.expect(not rnn, f"{name}: cuDNN RNN warning")


def check_quantize_refused(ctx: Ctx) -> None:
    """6. quantize='int8' (and 'int8-all') on CUDA: a one-line ValueError, before the checkpoint is loaded."""
    needs_cuda()
    real = checkpoint_read.load_package
    loaded = []

    def counting(*a, **kw):
        loaded.append(a[0] if a else kw)
        return real(*a, **kw)

    checkpoint_read.load_package = counting
    try:
        for mode in ("int8", "int8-all"):
            loaded.clear()
            t0 = time.perf_counter()
            try:
                MAGNeT.get_pretrained(FIXTURES / "music10", device=DEV, quantize=mode)
            except ValueError as exc:
                ctx.expect(one_line(exc), f"{mode}: message is not one line")
                ctx.expect(not loaded, f"{mode}: refused only after loading {len(loaded)} checkpoint file(s)")
                ctx.note(f"{mode}: ValueError after {time.perf_counter() - t0:.2f} s, "
                         f"{len(loaded)} files loaded: {str(exc)[:140]}")
            except Exception as exc:  # noqa: BLE001
                ctx.expect(False, f"{mode}: {error_line(exc)} instead of ValueError")
            else:
                ctx.expect(False, f"{mode}: accepted on {DEV}")
    finally:
        checkpoint_read.load_package = real
        free()


# ------------------------------------------------------------------------------------------- training
def write_audio_set(folder: Path, seconds: float = 3.0, sample_rate: int = 32000) -> Path:
    """Tones, a chord, noise and a pulse with music side-car JSON (as tests/train_utils.py)."""
    import numpy as np
    import soundfile

    clips = [("tone_a", "a calm sine tone at 440 hz", lambda t: 0.5 * np.sin(2 * np.pi * 440 * t)),
             ("chord_c", "a bright c major chord on a synth",
              lambda t: sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))),
             ("noise", "soft white noise like rain", lambda t: 0.1 * np.random.default_rng(0).standard_normal(t.shape)),
             ("pulse", "a slow pulsing bass at 60 bpm",
              lambda t: 0.5 * np.sin(2 * np.pi * 55 * t) * (np.sin(np.pi * t) > 0))]
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for name, text, fn in clips:
        soundfile.write(folder / f"{name}.wav", fn(t).astype(np.float32), sample_rate)
        info = {"title": name, "artist": "smoke", "key": "c", "bpm": 60, "genre": "test", "moods": ["calm"],
                "name": name, "instrument": "synth", "description": text}
        (folder / f"{name}.json").write_text(json.dumps(info))
    return folder


SMALL = dict(model_scale="tiny", dim=32, num_heads=2, num_layers=2, codec=str(FIXTURES / "music10"),
             segment_duration=1.0, batch_size=4, lr=3e-3, warmup=0, schedule="constant", cfg_dropout=0.0,
             word_dropout=0.0, num_workers=0, log_every=1, valid_every=1000, save_every=1000, valid_batches=1)
_MANIFEST: list = []


def manifest() -> Path:
    if not _MANIFEST:
        from openmagnet.data.manifest import index_audio_dir

        root = _TMP / "train"
        index_audio_dir(write_audio_set(root / "audio"), root / "manifest")
        _MANIFEST.append(root / "manifest")
    return _MANIFEST[0]


def train_and_resume(ctx: Ctx, out: Path, **kw) -> None:
    """Three steps, then resume to a fourth; losses finite, samples written, resumed step 3."""
    from openmagnet.train.presets import preset_config
    from openmagnet.train.solver import Solver

    continue_from = kw.pop("continue_from", None)
    cfg = preset_config("magnet_32khz", **{**SMALL, "max_steps": 3, "save_every": 3, "valid_every": 3,
                                           "generate_every": 3, "sample_steps": (1, 1, 1, 1), **kw})
    t0 = time.perf_counter()
    solver = Solver(cfg, str(manifest()), str(out), progress=False, device=str(DEV), continue_from=continue_from)
    ctx.note(f"precision {kw.get('precision', 'auto')} -> {solver.cfg.precision}")
    ctx.expect(on_device(solver.lm), f"lm on {params_devices(solver.lm)}")
    if kw.get("lora_rank"):
        trainable = sum(p.numel() for p in solver.lm.parameters() if p.requires_grad)
        total = sum(p.numel() for p in solver.lm.parameters())
        ctx.note(f"LoRA trainable {trainable}/{total}")
        ctx.expect(0 < trainable < 0.5 * total, "LoRA trainable parameter count")
    if kw.get("token_cache"):
        from openmagnet.data.tokens import TokenSegmentDataset

        ctx.expect(isinstance(solver.train_set, TokenSegmentDataset), "token cache not used")
        ctx.note(f"token cache {len(list((out / 'tokens').glob('*.pt')))} files")
    with contextlib.redirect_stdout(sys.stderr):  # the solver's progress lines: stdout keeps the table
        last = solver.run()
    sync()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ces = [r["ce"] for r in rows if "ce" in r]
    ctx.note(f"ce {', '.join(f'{c:.3f}' for c in ces)}; valid_ce {last.get('valid_ce', float('nan')):.3f}; "
             f"{time.perf_counter() - t0:.1f} s")
    ctx.expect(len(ces) == 3 and all(math.isfinite(c) for c in ces), f"losses {ces}")
    ctx.expect(math.isfinite(last.get("valid_ce", float("nan"))), "valid_ce not finite")
    samples = sorted((out / "samples" / "step_00000003").glob("*.wav"))
    ctx.expect(len(samples) >= 1, "no samples written at step 3")
    if kw.get("lora_rank"):
        ctx.expect((out / "adapters.safetensors").is_file(), "no adapters.safetensors")
    del solver
    free()
    resumed = Solver(None, None, str(out), resume=True, resume_overrides={"max_steps": 4}, progress=False,
                     device=str(DEV))
    step = resumed.step
    ctx.expect(step == 3, f"resumed at step {step}, expected 3")
    with contextlib.redirect_stdout(sys.stderr):
        last = resumed.run()
    ce = last.get("ce", float("nan"))
    ctx.note(f"{len(samples)} samples; resumed at step {step}, ran to {last.get('step')} (ce {ce:.3f})")
    ctx.expect(last.get("step") == 4 and math.isfinite(last.get("ce", float("nan"))), f"resumed run ended {last}")
    del resumed
    free()


def check_train_auto(ctx: Ctx) -> None:
    """7a. Training, precision auto, audio encoded on the fly (codec on the device), samples, resume."""
    with tempfile.TemporaryDirectory(dir=_TMP) as tmp:
        train_and_resume(ctx, Path(tmp) / "run", precision="auto")


def check_train_bf16_lora(ctx: Ctx) -> None:
    """7b. Training, bf16, LoRA fine-tuning of the music10 fixture, token cache, samples, resume."""
    precision = "bf16"
    if not CUDA and not bf16_native(DEV):
        precision = "fp32"
        ctx.note("this CPU has no native bf16 (refused by design): ran fp32")
    with tempfile.TemporaryDirectory(dir=_TMP) as tmp:
        train_and_resume(ctx, Path(tmp) / "run", precision=precision, lora_rank=4, token_cache=True,
                         continue_from=str(FIXTURES / "music10"), ema_every=1, ema_decay=0.0)


# ------------------------------------------------------------------------------------------- app, CLI
def check_app(ctx: Ctx) -> None:
    """8. The app engine loads the model on the device and reports its precision; one short generation."""
    from openmagnet.app.engine import Engine, Request, precision

    with tempfile.TemporaryDirectory(dir=_TMP) as tmp:
        engine = Engine(tmp)
        model_name = str(FIXTURES / "music10")
        model = engine.model(model_name, ARGS.device)
        shown = precision(model.lm)
        want = dname(expected_dtype())
        ctx.note(f"precision(lm) {shown!r} on {model.device}")
        ctx.expect(shown == want, f"precision {shown!r} != {want!r}")
        ctx.expect(model.device.type == DEV.type, f"app model on {model.device}")
        info = engine.model_info()
        ctx.expect(f"({want}" in info, f"model_info lacks ({want}: {info[:120]}")
        t0 = time.perf_counter()
        out = engine.generate(Request(model=model_name, prompts="happy rock", steps=(2, 1, 1, 1), seed=3,
                                      device=ARGS.device))
        sync()
        ctx.note(f"generate {time.perf_counter() - t0:.1f} s, {len(out.clips)} clip")
        ctx.expect(len(out.clips) == 1 and out.clips[0].audio.is_file(), "no clip written")
        ctx.expect(f"({want}" in out.model_info, "outcome model_info lacks the precision")
        del engine, model
        free()


def check_cli(ctx: Ctx) -> None:
    """9. `openmagnet generate "happy rock" --model tests/fixtures/music10 --device DEV --out TMP` in a subprocess."""
    script = Path(sys.executable).parent / "openmagnet"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "openmagnet"]
    with tempfile.TemporaryDirectory(dir=_TMP) as tmp:
        args = ["generate", "happy rock", "--model", str(FIXTURES / "music10"), "--device", ARGS.device,
                "--out", tmp, "--seed", "0", "--quiet"]
        if ARGS.threads:
            args += ["--threads", str(ARGS.threads)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300, env=dict(os.environ),
                              cwd=str(ROOT))
        seconds = time.perf_counter() - t0
        files = sorted(p for p in Path(tmp).iterdir() if p.is_file())
        ctx.note(f"{'openmagnet' if script.is_file() else 'python -m openmagnet'} exit {done.returncode} in "
                 f"{seconds:.1f} s; files {[p.name for p in files]}")
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        ctx.expect(done.returncode == 0, f"exit code {done.returncode}: {tail}")
        ctx.expect(len(files) == 1, "no audio file written")
        if files:
            import soundfile

            info = soundfile.info(str(files[0]))
            ctx.note(f"{info.samplerate} Hz, {info.frames / info.samplerate:.2f} s")
            ctx.expect(info.samplerate == 32000 and info.frames > 0, "audio file content")


SPEED_SETTINGS = {  # name -> (float dtype of the LM's matrices on the device, speed preset, compile)
    "exact (float32)": (None, None, False),
    "fast": ("fast", None, False),
    "turbo": (None, "turbo", False),
    "fast + turbo": ("fast", "turbo", False),
    "fast + turbo, compiled (CUDA graphs)": ("fast", "turbo", True),
}


def random_model(base: MAGNeT, preset: str, dtype: torch.dtype) -> MAGNeT:
    """The `preset` architecture (config.LM_PRESETS) with random weights, 10-s window, on the fixture's text
    encoder and codec: the released models' shapes without their weights (none can be downloaded here)."""

    from openmagnet.config import LM_PRESETS, LMConfig
    from openmagnet.lm import MagnetLM

    cfg = LMConfig(**LM_PRESETS[preset], text_dim=base.cfg.text_dim, segment_duration=base.cfg.segment_duration)
    with torch.device(DEV):
        lm = MagnetLM(cfg).eval().requires_grad_(False)
    if dtype != torch.float32:
        from openmagnet.quantize import cast_float_matrices

        cast_float_matrices(lm, dtype)
    return MAGNeT(f"random-{preset}", lm, base.text_config, base.compression_model)


def time_generation(model: MAGNeT, batch: int, steps, speed) -> tuple:
    """(seconds for one generation of `batch` clips, forward passes, seconds of the warm-up generation before it,
    which also pays any compile time)."""
    model.set_generation_params(decoding_steps=list(steps), speed=speed)
    prompts = ["happy rock"] * batch
    sync()
    t0 = time.perf_counter()
    model.generate(prompts, generator=gen(0))
    sync()
    warm = time.perf_counter() - t0
    before = model.forward_passes
    t0 = time.perf_counter()
    model.generate(prompts, generator=gen(1))
    sync()
    return time.perf_counter() - t0, model.forward_passes - before, warm


def largest_batch(model: MAGNeT, steps, speed, limit: int) -> tuple:
    """(batch, seconds) of the largest power-of-two batch up to `limit` that generates without running out of
    memory (one short generation per size)."""
    best = (1, None)
    batch = 1
    while batch <= limit:
        try:
            seconds, _, _ = time_generation(model, batch, steps, speed)
        except torch.cuda.OutOfMemoryError:
            free()
            break
        best = (batch, seconds)
        batch *= 2
    return best


def check_speed(ctx: Ctx) -> None:
    """10. Speed table: small and medium architectures (random weights), 10 s at [20, 10, 10, 10]; batch 1 end to
    end and samples/s at the largest batch that fits, exact vs fast vs turbo vs compiled (CUDA graphs for the
    fixed duration and batch). The CPU dry run times the fixture's own tiny LM, 1 s, 2 steps, batch <= 2."""
    base = model_on("music10")
    presets = ("small", "medium") if CUDA else ("tiny",)
    steps = GEN_STEPS
    table = []
    for preset in presets:
        for name, (dtype, speed, compiled) in SPEED_SETTINGS.items():
            if compiled and not CUDA:
                continue  # compile on CPU is tested in tests/test_runtime.py; here it would only cost minutes
            fast = dtype == "fast"
            want = (torch.bfloat16 if cuda_bf16_native(DEV) else torch.float16) if fast and CUDA else torch.float32
            model = base if preset == "tiny" else random_model(base, preset, want)
            if preset == "tiny" and fast:
                model = MAGNeT.get_pretrained(FIXTURES / "music10", device=DEV, fast=True)
            if compiled:
                from openmagnet.runtime import compile_lm

                compile_lm(model.lm, mode="reduce-overhead")
            if GEN_SECONDS:
                model.duration = GEN_SECONDS
            seconds, passes, warm = time_generation(model, 1, steps, speed)
            batch, batch_seconds = largest_batch(model, steps, speed, 64 if CUDA else 2)
            rate = batch / batch_seconds
            audio = model.duration
            table.append(f"| {preset} | {name} | {model.mode} | {seconds:.2f} | {audio / seconds:.2f} | {passes} | "
                         f"{batch} | {rate:.2f} | {warm:.1f} |")
            ctx.expect(math.isfinite(seconds) and passes > 0, f"{preset} {name}: no timing")
            model.lm.compiled_layers = None
            del model
            free()
    ctx.note("speed table printed below")
    header = ["| architecture | setting | mode | batch 1 end to end (s) | x real time | forward passes | "
              "largest batch | samples / s there | first (warm-up/compile) run (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    SPEED_TABLE[:] = header + table
    print("\n".join(SPEED_TABLE), file=sys.stderr, flush=True)


SPEED_TABLE: list = []

CHECKS = [
    ("1 loading (dtype, codec+T5 on device, no RNN warning)", check_loading),
    ("2 generate/uncond/continuation x arrangement x sampling", check_generation),
    ("3 CPU generator with a CUDA model", check_generator_device),
    ("4 stage logits vs CPU fp32 (fp32/bf16/fp16)", check_stage_logits),
    ("5 codec encode/decode vs CPU", check_codec),
    ("6 quantize=int8 on CUDA refused before loading", check_quantize_refused),
    ("7a train: auto precision, samples, resume", check_train_auto),
    ("7b train: bf16 + LoRA + token cache, samples, resume", check_train_bf16_lora),
    ("8 app engine precision + generate", check_app),
    ("9 CLI generate (subprocess)", check_cli),
    ("10 speed table: exact / fast / turbo / compiled, batch 1 and largest batch", check_speed),
]


# ------------------------------------------------------------------------------------------- main
def device_name() -> str:
    if CUDA and torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(DEV).lower()).strip("_")
    return DEV.type


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> int:
    started = time.perf_counter()
    torch.manual_seed(0)
    header = [f"# openmagnet GPU smoke test on {ARGS.device}", "",
              f"openmagnet {openmagnet.__version__} (commit {git_commit()}), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, python {sys.version.split()[0]}", "", "```", describe_machine(), "```", ""]
    if CUDA:
        try:
            runtime.check_device(DEV)
        except ValueError as exc:
            print("\n".join(header))
            print(f"cannot run on {ARGS.device}: {exc}")
            return 2
    print("\n".join(header), flush=True)
    rows = []
    for name, fn in CHECKS:
        if ARGS.only and name.split()[0] not in ARGS.only:
            continue
        ctx = Ctx()
        t0 = time.perf_counter()
        result = None
        try:
            fn(ctx)
            sync()
        except Skip as why:
            result = f"skipped: {why}"
        except Exception as exc:  # noqa: BLE001 - recorded; the next check runs
            ctx.failures.append("error: " + error_line(exc))
            print(f"---- {name}: traceback", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - t0
        if result is None:
            result = "FAIL" if ctx.failures else "ok"
        detail = "; ".join(ctx.notes + ctx.failures)
        rows.append(dict(check=name, result=result, detail=detail, seconds=round(seconds, 2)))
        print(f"[{seconds:6.1f} s] {name}: {result}", file=sys.stderr, flush=True)
        free()
    total = time.perf_counter() - started
    table = ["| check | result | detail |", "| --- | --- | --- |"]
    for r in rows:
        detail = "[%.1f s] %s" % (r["seconds"], r["detail"])
        table.append(f"| {cell(r['check'])} | {cell(r['result'])} | {cell(detail)} |")
    failed = [r["check"] for r in rows if r["result"] == "FAIL"]
    n_ok, n_skipped = sum(r["result"] == "ok" for r in rows), sum(r["result"].startswith("skipped") for r in rows)
    footer = ["", f"total {total:.0f} s; {len(failed)} failed, {n_ok} ok, {n_skipped} skipped"]
    if SPEED_TABLE:
        footer += ["", "Speed (check 10):", ""] + SPEED_TABLE
    print("\n".join(table + footer), flush=True)

    out = Path(ARGS.out) if ARGS.out else (RESULTS if not DEV.type == "cpu" else None)
    if out is not None:
        md = out if out.suffix == ".md" else out / f"gpu_smoke_{device_name()}.md"
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text("\n".join(header + table + footer) + "\n")
        md.with_suffix(".json").write_text(json.dumps(dict(
            device=ARGS.device, device_name=device_name(), machine=describe_machine(), torch=torch.__version__,
            cuda=torch.version.cuda, commit=git_commit(), total_seconds=round(total, 1), failed=failed,
            checks=rows), indent=1) + "\n")
        print(f"wrote {md} and {md.with_suffix('.json').name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
    sys.exit(code)
