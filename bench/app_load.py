#!/usr/bin/env python
"""Load test of `openmagnet app`: N clients at once through gradio_client against one server.

    .venv/bin/python bench/app_load.py --clients 8
    .venv/bin/python bench/app_load.py --clients 32 [--requests 2] [--steps 2 1 1 1]

Starts `openmagnet app` on 127.0.0.1 (a free port) in a subprocess with the bundled demo model and
few decoding steps (a job takes seconds), warms it with one generation, then:

1. one client, `--baseline` generations one after another (latency and peak RSS of a single user);
2. N clients at once, each submitting `--requests` jobs back to back without waiting. Jobs cycle
   through: a valid prompt, an empty prompt, a temperature out of range, a valid prompt cancelled
   midway with job.cancel(), an upload longer than --max-upload-seconds, a model outside the list.

Every request ends in one of: audio (a clip came back), a queue message (gradio's queue is full),
a readable error (by kind, read from the status line), cancelled, or no answer (no reply within
--timeout, or the connection failed). The server's RSS (with its children) is sampled every 50 ms
with psutil. At the end the server must still answer and no request may be left without an answer
(exit status 1 otherwise). Results are merged into bench/results/app_load.json (by N) and the table
is rewritten to bench/results/app_load.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as tp
from pathlib import Path

import numpy as np
import psutil
import soundfile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KINDS = ("ok", "empty_prompt", "ok", "out_of_range", "cancel", "ok", "long_upload", "model_refused")
ERROR_KINDS = {"The prompt is empty": "empty prompt", "must be from": "out of range", "must be a number":
               "out of range", "not one this server offers": "model refused", "uploaded audio": "upload refused",
               "uploaded file": "upload refused"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler:
    """Peak resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.05):
        self.proc, self.every, self.peak = psutil.Process(pid), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:
                return
            time.sleep(self.every)

    def reset(self) -> int:
        self.peak = self.rss()
        return self.peak

    def stop(self):
        self._stop.set()
        self._thread.join()


def start_server(port: int, out: Path, model: str, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "openmagnet.cli", "app", "--host", "127.0.0.1", "--port", str(port), "--model", model,
           "--out", str(out), "--threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def server_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see its log")
        if server_up(url):
            return
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer within {timeout:g} s")


class Args(tp.NamedTuple):
    model: str
    steps: tp.Sequence[int]
    long_upload: str
    http_timeout: float


def inputs(kind: str, a: Args, i: int) -> list:
    """The 17 inputs of the page's /run endpoint for one request of `kind`."""
    from gradio_client import handle_file

    model, prompt, temperature, audio = a.model, f"load test clip {i}: warm synth pads", 3.0, None
    if kind == "empty_prompt":
        prompt = "  "
    elif kind == "out_of_range":
        temperature = 99.0
    elif kind == "long_upload":
        audio = handle_file(a.long_upload)
    elif kind == "model_refused":
        model = "/etc"
    return [model, prompt, "stride1", "cpu", False, 1, i, *a.steps, temperature, 0.9, 10.0, 1.0, audio, 3.0]


def classify(values: tp.Any) -> tp.Tuple[str, str]:
    """(outcome, detail) of the /run endpoint's return values."""
    status = str(values[0])
    if status.startswith("**Done:**"):
        clip = values[3]
        path = clip.get("value") if isinstance(clip, dict) else clip
        ok = isinstance(path, str) and Path(path).is_file() and Path(path).stat().st_size > 0
        return ("audio", "") if ok else ("error: done without a file", status)
    if status.startswith("**Error:**"):
        text = status[len("**Error:** "):]
        kind = next((k for key, k in ERROR_KINDS.items() if key in text), "other")
        return f"error: {kind}", text
    if status.startswith("**Interrupted:**"):
        return "interrupted", status
    return "no answer", f"unexpected status {status[:120]!r}"


def one_request(client, kind: str, a: Args, i: int, timeout: float, rng: np.random.Generator) -> dict:
    from gradio_client.utils import Status

    started = time.perf_counter()
    cancel_after = float(rng.uniform(0.2, 3.0)) if kind == "cancel" else None
    try:
        job = client.submit(*inputs(kind, a, i), api_name="/run")
        if cancel_after is not None:
            time.sleep(cancel_after)
            job.cancel()
        try:
            values = job.result(timeout=timeout)
            outcome, detail = classify(values)
        except cf.CancelledError:
            outcome, detail = "cancelled", ""
        except cf.TimeoutError:
            outcome, detail = "no answer", f"no reply within {timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - every failure is recorded by kind
            text = str(exc)
            if "queue" in text.lower() and "full" in text.lower():
                outcome, detail = "queue full", text[:200]
            elif cancel_after is not None and job.status().code == Status.CANCELLED:
                outcome, detail = "cancelled", text[:200]
            else:
                outcome, detail = "no answer", f"{type(exc).__name__}: {text[:200]}"
        if outcome != "cancelled" and job.status().code == Status.CANCELLED:
            outcome = "cancelled"
    except Exception as exc:  # noqa: BLE001 - the submission itself failed
        outcome, detail = "no answer", f"{type(exc).__name__}: {str(exc)[:200]}"
    return dict(kind=kind, outcome=outcome, detail=detail, seconds=time.perf_counter() - started,
                cancel_after=cancel_after)


def client_jobs(url: str, kinds: tp.List[str], first: int, a: Args, timeout: float, seed: int,
                burst: bool) -> tp.List[dict]:
    """One client: connect (reading the page's config), submit its jobs (all at once when burst, else
    one after another) and wait for each answer."""
    from gradio_client import Client

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    try:  # HTTP calls wait up to http_timeout, as a browser would (gradio_client's default is 5 s)
        client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="openmagnet-load-"),
                        httpx_kwargs={"timeout": a.http_timeout})
    except Exception as exc:  # noqa: BLE001 - the client could not even connect
        return [dict(kind=k, outcome="no answer", detail=f"connect: {type(exc).__name__}: {exc}",
                     seconds=time.perf_counter() - started, cancel_after=None, connect_s=None, client=first)
                for k in kinds]
    connect = time.perf_counter() - started
    if not burst:
        records = [one_request(client, k, a, first + j, timeout, rng) for j, k in enumerate(kinds)]
    else:
        with cf.ThreadPoolExecutor(len(kinds)) as pool:
            futures = [pool.submit(one_request, client, k, a, first + j, timeout, rng) for j, k in enumerate(kinds)]
            records = [f.result() for f in futures]
    client.close()
    return [dict(r, connect_s=connect, client=first) for r in records]


def percentile(values: tp.List[float], q: float) -> tp.Optional[float]:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


def summarise(records: tp.List[dict], wall: float, peak_rss: int) -> dict:
    outcomes: tp.Dict[str, int] = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    answered = [r["seconds"] for r in records if r["outcome"] != "no answer"]
    audio = [r["seconds"] for r in records if r["outcome"] == "audio"]
    connects = list({r["client"]: r["connect_s"] for r in records if r["connect_s"] is not None}.values())
    return dict(requests=len(records), outcomes=dict(sorted(outcomes.items())), wall_s=wall,
                p50_s=percentile(answered, 50), p95_s=percentile(answered, 95),
                audio_p50_s=percentile(audio, 50), audio_p95_s=percentile(audio, 95),
                connect_p50_s=percentile(connects, 50), connect_max_s=max(connects, default=None),
                peak_rss_mb=peak_rss / 2**20, records=records)


def run_phase(url: str, sampler: RssSampler, clients: int, requests: int, a: Args, timeout: float,
              burst: bool, kinds: tp.Optional[tp.List[str]] = None) -> dict:
    sampler.reset()
    started = time.perf_counter()
    plan = [[(kinds or KINDS)[(c * requests + j) % len(kinds or KINDS)] for j in range(requests)]
            for c in range(clients)]
    with cf.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client_jobs, url, plan[c], c * requests, a, timeout, 1000 + c, burst)
                   for c in range(clients)]
        records = [r for f in futures for r in f.result()]
    return summarise(records, time.perf_counter() - started, sampler.peak)


def fmt(x: tp.Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def write_results(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "app_load.json").write_text(json.dumps(results, indent=1) + "\n")
    columns = ["audio", "queue full", "cancelled", "error: empty prompt", "error: out of range",
               "error: upload refused", "error: model refused", "no answer"]
    runs = results["runs"]
    others = sorted({o for run in runs.values() for phase in ("single", "load") for o in run[phase]["outcomes"]}
                    - set(columns))
    lines = ["# `openmagnet app` under load (issue 18)", "",
             "`python bench/app_load.py --clients N`: the app on 127.0.0.1 with the bundled `openmagnet/demo` model "
             "(CPU, 1 torch thread, 10-s clips, decoding steps as listed), N gradio_client clients at once, each "
             "submitting its requests back to back; requests cycle through a valid prompt, an empty prompt, a "
             "temperature out of range, a valid prompt cancelled midway (`job.cancel()`), an upload longer than "
             "the 120-s limit, and a model outside the list. Latency is from submit to answer (queue wait "
             "included); peak RSS is the server process's, sampled every 50 ms. Each single row is one client "
             "making generations one after another on the same server just before the N clients; connect is "
             "the time a client takes to open the page (gradio_client reads its config). Raw: app_load.json.", "",
             "| N | requests | " + " | ".join(columns + others) + " | p50 s | p95 s | audio p50 s | audio p95 s "
             "| connect p50 / max s | wall s | peak RSS MiB | server up |",
             "|---" * (len(columns) + len(others) + 10) + "|"]
    for n, run in sorted(runs.items(), key=lambda kv: int(kv[0])):
        for label, phase in ((f"1 (single, before N={n})", run["single"]), (n, run["load"])):
            counts = [str(phase["outcomes"].get(c, 0)) for c in columns + others]
            lines.append(f"| {label} | {phase['requests']} | " + " | ".join(counts) + f" | {fmt(phase['p50_s'])} | "
                         f"{fmt(phase['p95_s'])} | {fmt(phase['audio_p50_s'])} | {fmt(phase['audio_p95_s'])} | "
                         f"{fmt(phase.get('connect_p50_s'))} / {fmt(phase.get('connect_max_s'))} | "
                         f"{fmt(phase['wall_s'], 0)} | {fmt(phase['peak_rss_mb'], 0)} | "
                         f"{'yes' if run['server_up'] else 'NO'} |")
    first = next(iter(runs.values()))
    lines += ["", f"Settings: decoding steps {first['steps']}, {first['requests_per_client']} requests per client, "
                  f"timeout {first['timeout_s']:g} s per request; RSS after start {fmt(first['idle_rss_mb'], 0)} MiB, "
                  f"after the warm-up generation {fmt(first['warm_rss_mb'], 0)} MiB (N={next(iter(runs))}). "
                  f"Machine: {first['machine']}.", ""]
    (RESULTS / "app_load.md").write_text("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[8], help="N simultaneous clients (one run each)")
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--baseline", type=int, default=3, help="generations of the single-client run")
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--steps", type=int, nargs=4, default=[2, 1, 1, 1])
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--timeout", type=float, default=600, help="seconds a request may wait for its answer")
    p.add_argument("--http-timeout", type=float, default=120,
                   help="seconds each HTTP call of a client (connect, upload) may take")
    p.add_argument("--no-write", action="store_true", help="print, do not write bench/results")
    p.add_argument("--verbose", action="store_true", help="print every request of the load phase")
    p.add_argument("--table", action="store_true", help="only rewrite app_load.md from app_load.json")
    a = p.parse_args()
    if a.table:
        write_results(json.loads((RESULTS / "app_load.json").read_text()))
        return 0
    results = {"runs": {}}
    if (RESULTS / "app_load.json").exists() and not a.no_write:
        results = json.loads((RESULTS / "app_load.json").read_text())
    failed = False
    for n in a.clients:
        with tempfile.TemporaryDirectory(prefix="openmagnet-load-") as tmp:
            tmp = Path(tmp)
            upload = tmp / "long.wav"  # 130 s at 8 kHz mono, 2 MB: above the 120-s default limit
            soundfile.write(upload, np.zeros(130 * 8000, dtype="int16"), 8000)
            args = Args(a.model, a.steps, str(upload), a.http_timeout)
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            server = start_server(port, tmp / "out", a.model, a.threads, tmp / "server.log")
            try:
                wait_up(url, server)
                sampler = RssSampler(server.pid)
                idle = sampler.rss()
                warm = run_phase(url, sampler, 1, 1, args, a.timeout, False, kinds=["ok"])
                warm_rss = sampler.rss()
                single = run_phase(url, sampler, 1, a.baseline, args, a.timeout, False, kinds=["ok"])
                load = run_phase(url, sampler, n, a.requests, args, a.timeout, True)
                sampler.stop()
                up = server.poll() is None and server_up(url)
                run = dict(clients=n, requests_per_client=a.requests, steps=a.steps, timeout_s=a.timeout,
                           model=a.model, idle_rss_mb=idle / 2**20, warm_rss_mb=warm_rss / 2**20,
                           warm_s=warm["wall_s"], single=single, load=load, server_up=up,
                           machine=f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
            finally:
                server.terminate()
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
            unanswered = load["outcomes"].get("no answer", 0) + single["outcomes"].get("no answer", 0)
            print(f"N={n}: {load['outcomes']} p50 {fmt(load['p50_s'])} s p95 {fmt(load['p95_s'])} s, peak RSS "
                  f"{fmt(load['peak_rss_mb'], 0)} MiB (single {fmt(single['peak_rss_mb'], 0)} MiB), server up: {up}")
            for r in load["records"]:
                if r["outcome"] == "no answer" or a.verbose:
                    print(f"  {r['kind']}: {r['outcome']} after {r['seconds']:.1f} s {r['detail'][:100]}")
            if not up or unanswered:
                failed = True
                print((tmp / "server.log").read_text()[-4000:], file=sys.stderr)
            results["runs"][str(n)] = run
    if not a.no_write:
        write_results(results)
        print((RESULTS / "app_load.md").read_text())
    if failed:
        print("FAILED: the server went down or some request got no answer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
