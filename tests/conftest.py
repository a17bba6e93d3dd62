"""Shared test set-up: golden fixtures made by audiocraft 1.3.0 (tests/fixtures/tools/) and an
offline Hugging Face cache holding the fabricated t5-base / t5-large / encodec_32khz they use.

The hub environment must be set before transformers or huggingface_hub are imported, so it is
set here, at import time of the conftest.
"""
import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
os.environ["HF_HUB_CACHE"] = str(FIXTURES / "hf_cache")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURE_NAMES = ("music10", "music30", "music10_hf", "sound10")


@functools.lru_cache(maxsize=None)
def reference(name: str) -> dict:
    """The tensors audiocraft produced on fixture `name` (see tests/fixtures/tools/dump_reference.py)."""
    return torch.load(FIXTURES / name / "reference.pt", weights_only=True)


@functools.lru_cache(maxsize=None)
def load_fixture_model(name: str):
    from openmagnet import MAGNeT

    return MAGNeT.get_pretrained(FIXTURES / name, device="cpu")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(2)  # the fixtures were dumped with 2 threads
    yield
