"""Shared test set-up: golden fixtures made by audiocraft 1.3.0 (tests/fixtures/tools/) and an
offline Hugging Face cache holding the fabricated t5-base / t5-large / encodec_32khz they use.

The hub environment must be set before transformers or huggingface_hub are imported, so it is
set here, at import time of the conftest.
"""
import os
from pathlib import Path

import shutil  # noqa: E402
import tempfile  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
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


@pytest.fixture(autouse=True, scope="session")
def _session():
    torch.set_num_threads(2)  # the fixtures were dumped with 2 threads
    yield
    shutil.rmtree(HUB_CACHE.parent, ignore_errors=True)
