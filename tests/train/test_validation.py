"""Validation during training (openmagnet/train/validation.py): the codes' unigram entropy, and the same
frames scored with the true, another item's and no description."""
import math

import torch

from openmagnet.train.validation import unigram_entropy
from tests.train.conftest import _solver


def test_unigram_entropy_on_known_histograms():
    codes = torch.zeros(2, 2, 8, dtype=torch.long)
    codes[:, 1] = torch.arange(8) % 4  # four codes, equally often
    row = unigram_entropy(codes, card=16)
    assert row["valid_unigram_0"] == 0.0
    assert math.isclose(row["valid_unigram_1"], math.log(4), rel_tol=1e-12)
    assert math.isclose(row["valid_unigram"], math.log(4) / 2, rel_tol=1e-12)


def test_text_variants_are_scored_on_the_same_frames(manifest, tmp_path):
    solver = _solver(manifest, tmp_path / "run", max_steps=1, valid_batches=2)
    row = solver.validate(solver.ema_state())
    for variant in ("", "shuffled_", "null_"):
        assert all(math.isfinite(row[f"valid_{variant}ce_{k}"]) for k in range(4)), variant
        assert math.isclose(row[f"valid_{variant}ce"], sum(row[f"valid_{variant}ce_{k}"] for k in range(4)) / 4)
    assert row["valid_null_ce"] != row["valid_ce"]  # the null condition is another input
    items = solver.validator.prepared()
    assert len(items) == 2 and all(set(item) == {"codes", "", "shuffled_", "null_"} for item in items)
    # the true text of item i + 1 is the shuffled text of item i (rotated by one over all batches)
    descriptions = [solver.valid_set[i]["description"] for i in range(8)]
    rotated = descriptions[1:] + descriptions[:1]
    states, mask = solver.text(rotated[:4])
    assert torch.equal(items[0]["shuffled_"][0], states) and torch.equal(items[0]["shuffled_"][1], mask)
    # the same masks for every variant: the same text scores exactly the same
    for item in items:
        item["shuffled_"] = item[""]
    same = solver.validator(solver.ema_lm(), solver.step)
    assert same["valid_shuffled_ce"] == same["valid_ce"]
