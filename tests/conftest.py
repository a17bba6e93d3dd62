"""Shared test set-up: golden fixtures made by audiocraft 1.3.0 (tests/fixtures/tools/) and an
offline Hugging Face cache holding the fabricated t5-base / t5-large / encodec_32khz they use.

The hub environment must be set before transformers or huggingface_hub are imported, and the float
kernels' instruction set before torch is imported (fixtures/tools/pins.py), so both are set here, at
import time of the conftest.

Parity regime: on x86-64 with AVX2 the kernels are pinned to AVX2 and 2 threads, as when the fixtures
were dumped, and the parity tests demand bit-identical logits and tokens ("exact"). Where nothing
can be pinned (ARM, or a CPU without AVX2) they check logits to 1e-4 and report greedy-token
agreement instead ("tolerance"); the regime is printed in pytest's header.
"""
import os
import sys
from pathlib import Path

import shutil  # noqa: E402
import tempfile  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES / "tools"))
from pins import apply_pins, pinnable  # noqa: E402

if "torch" in sys.modules and pinnable() and not os.environ.get("ATEN_CPU_CAPABILITY"):
    raise RuntimeError("torch was imported before tests/conftest.py could pin its kernels: run the tests "
                       "with `python -m pytest` from the repository root")
apply_pins()
# numba's code for AMD Zen 4 crashes librosa (see evaluation/adherence.load_librosa); any test may import librosa first
os.environ.setdefault("NUMBA_CPU_NAME", "generic")
PARITY_REGIME = "exact" if pinnable() else "tolerance"
HUB_ID = "facebook/magnet-small-10secs"  # served from the cache below by the music10 fixture files


def _make_hub_cache() -> Path:
    """A private copy of the fixture hub cache (nothing writes into tests/fixtures), plus a hub
    entry for HUB_ID holding the music10 files, so loading by hub id runs the real download code
    path (huggingface_hub resolving from its cache in offline mode)."""
    cache = Path(tempfile.mkdtemp(prefix="openmagnet-hub-")) / "hub"
    shutil.copytree(FIXTURES / "hf_cache", cache)
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("state_dict.bin", "compression_state_dict.bin"):
        shutil.copy2(FIXTURES / "music10" / name, snapshot / name)
    return cache


HUB_CACHE = _make_hub_cache()
os.environ["HF_HUB_CACHE"] = str(HUB_CACHE)
os.environ["HF_HUB_OFFLINE"] = "1"
# what fast=True measures about the machine goes to a private cache, never the user's (runtime.user_cache_dir)
os.environ["OPENMAGNET_CACHE"] = tempfile.mkdtemp(prefix="openmagnet-cache-")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURE_NAMES = ("music10", "music30", "music10_hf", "sound10")


@functools.lru_cache(maxsize=None)
def reference(name: str) -> dict:
    """The tensors audiocraft produced on fixture `name` (see tests/fixtures/tools/dump_reference.py)."""
    return torch.load(FIXTURES / name / "reference.pt", weights_only=True)


def meta(name: str) -> dict:
    """What dump_reference.py recorded about fixture `name` (prompts, steps, strides)."""
    return json.loads((FIXTURES / name / "reference.json").read_text())


def cfg_condition(name: str, model=None):
    """(model, tokenized inputs, condition [2B, S, D]) for the fixture's parity prompts, built as
    the reference builds the guidance batch: conditional rows, then null rows."""
    model = model or load_fixture_model(name)
    prompts = meta(name)["parity_prompts"]
    inputs = model.conditioner.tokenize(prompts + [None] * len(prompts))
    embeds, _ = model.conditioner.encode(inputs)
    return model, inputs, embeds


@functools.lru_cache(maxsize=None)
def load_fixture_model(name: str):
    from openmagnet import MAGNeT

    return MAGNeT.get_pretrained(FIXTURES / name, device="cpu")


def parity_regime_line() -> str:
    if PARITY_REGIME == "exact":
        pinned = ('ATEN_CPU_CAPABILITY', 'MKL_CBWR', 'ONEDNN_MAX_CPU_ISA')
        return (f"parity regime: exact (x86-64, float kernels pinned: "
                f"{', '.join(f'{k}={os.environ[k]}' for k in pinned)}"
                f", {torch.get_num_threads()} threads)")
    return "parity regime: tolerance (kernels cannot be pinned here: logits to 1e-4, token agreement reported)"


TOKEN_AGREEMENT = {}  # test id -> greedy-token agreement, in the tolerance regime


def assert_same_tokens(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Greedy tokens identical to audiocraft's in the exact regime; elsewhere the agreement is
    recorded for the summary (and must stay above a sanity floor: a wrong decoder agrees ~0%)."""
    assert actual.shape == expected.shape
    if PARITY_REGIME == "exact":
        assert torch.equal(actual, expected)
        return
    agreement = (actual == expected).float().mean().item()
    TOKEN_AGREEMENT[name] = agreement
    assert agreement >= 0.5, f"{name}: greedy-token agreement {agreement:.1%} with audiocraft"


def pytest_report_header(config):
    return parity_regime_line()


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(parity_regime_line())  # also under -q, which hides the header
    if TOKEN_AGREEMENT:
        terminalreporter.write_sep("-", "greedy-token agreement with audiocraft (tolerance regime)")
        for name, value in sorted(TOKEN_AGREEMENT.items()):
            terminalreporter.write_line(f"{name}: {value:.2%}")


@pytest.fixture(autouse=True, scope="session")
def _session():
    torch.set_num_threads(2)  # the fixtures were dumped with 2 threads
    yield
    shutil.rmtree(HUB_CACHE.parent, ignore_errors=True)
