"""`openmagnet train` (openmagnet/train/command.py): a tiny run from the command line, then resumed."""
import shutil

from tests.train.conftest import CODEC, _metrics


def test_cli_train_and_resume(manifest, tmp_path):
    from openmagnet.cli import main

    args = ["train", "--data", str(manifest), "--out", str(tmp_path / "run"), "--model-scale", "tiny",
            "--codec", CODEC, "--segment-duration", "1", "--batch-size", "2", "--max-steps", "2",
            "--num-workers", "0", "--quiet", "--set", "dim=32", "--set", "num_heads=2", "--set", "num_layers=1",
            "--set", "save_every=1", "--set", "valid_every=2", "--set", "valid_batches=1"]
    assert main(args) == 0
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "3", "--quiet"]) == 0
    steps = [r["step"] for r in _metrics(tmp_path / "run") if "ce" in r]
    assert steps[-1] == 3
    shutil.rmtree(tmp_path / "run")
