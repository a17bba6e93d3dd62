"""`openmagnet codec train|export|eval` (openmagnet/train/codec/command.py) and its import cost."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


# ------------------------------------------------------------------------------------------------
# Command line and import cost
# ------------------------------------------------------------------------------------------------
def test_codec_commands(manifest, tmp_path, capsys):
    from openmagnet.train.codec.command import add_codec_parser

    parser = argparse.ArgumentParser(prog="openmagnet")
    add_codec_parser(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr().out

    first = ("codec", "train", "--data", str(manifest), "--out", str(tmp_path / "r"), "--sample-rate", "16000",
             "--n-filters", "4", "--dimension", "16", "--lstm", "0", "--bins", "32", "--steps", "1",
             "--batch-size", "1", "--segment-seconds", "0.5", "--save-every", "1", "--quiet")
    assert run(*first).startswith("trained to step 1; last loss ")
    # resuming a finished run says so (it once printed "trained to step None")
    assert run(*first, "--resume").strip() == (f"{tmp_path / 'r'} is already trained to step 1 (--steps 1): nothing to "
                                                f"do (pass --resume --steps N with a larger N to train further)")
    out = run("codec", "export", str(tmp_path / "r"), "--out", str(tmp_path / "m"))
    assert out.strip().endswith("compression_state_dict.bin")
    row = json.loads(run("codec", "eval", str(tmp_path / "m"), "--data", str(manifest), "--clips", "1",
                         "--seconds", "0.5"))
    assert row["clips"] == 1 and "si_sdr" in row
    # a second phase from the exported codec, with tones in a range and a lighter waveform term
    run("codec", "train", "--data", str(manifest), "--out", str(tmp_path / "r2"), "--sample-rate", "16000",
        "--n-filters", "4", "--dimension", "16", "--lstm", "0", "--bins", "32", "--steps", "1",
        "--batch-size", "1", "--segment-seconds", "0.5", "--save-every", "1", "--quiet", "--init-from",
        str(tmp_path / "m"), "--tone-p", "0.5", "--tone-range", "880", "4000", "--l1-weight", "0.1")
    train = json.loads((tmp_path / "r2" / "run.json").read_text())["train"]
    assert train["init_from"] == str((tmp_path / "m").resolve()) and train["tone_range"] == [880.0, 4000.0]
    assert (train["tone_p"], train["w_l1"]) == (0.5, 0.1)


def test_codec_package_import_does_not_load_training():
    code = ("import sys, openmagnet, openmagnet.codec, openmagnet.train.codec.command; "
            "print([m for m in ('openmagnet.train.codec.trainer', 'openmagnet.train.codec.losses', 'tqdm.auto', "
            "'yaml', 'soundfile') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
