"""`openmagnet generate --duration/--negative` and `openmagnet edit` (infill) through cli.main."""
import os

import numpy as np
import soundfile as sf

from tests.conftest import FIXTURES
from openmagnet.cli import main


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_past_the_window_with_a_negative_prompt(tmp_path, capsys):
    code, out, err = run_cli(["generate", "happy rock", "--model", str(FIXTURES / "sound10"), "--out", str(tmp_path),
                              "--steps", "1", "1", "1", "1", "--duration", "12.5", "--negative", "noise", "--quiet",
                              "--span-arrangement", "stride1"], capsys)
    assert code == 0, err
    wav, sr = sf.read(out.split()[0])
    assert sr == 16000 and wav.shape == (625 * 320,)  # 12.5 s: two windows


def test_edit_regenerates_a_region(tmp_path, capsys):
    source = tmp_path / "song.wav"
    t = np.arange(3 * 16000) / 16000
    sf.write(source, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    code, out, err = run_cli(["edit", str(source), "birds", "--region", "1.0", "2.0", "--model",
                              str(FIXTURES / "sound10"), "--out", str(tmp_path / "o"), "--crossfade", "0.05",
                              "--seed", "0", "--quiet"], capsys)
    assert code == 0, err
    assert os.path.basename(out.split()[0]) == "song_edit.wav"
    wav, sr = sf.read(out.split()[0])
    assert sr == 16000 and wav.shape == (3 * 16000,)
    code, _, err = run_cli(["edit", str(source), "--region", "2.0", "4.0", "--model", str(FIXTURES / "sound10"),
                            "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and err == "openmagnet: error: region 0 (2-4 s) is outside the audio (0-3.00 s)\n"
    code, _, err = run_cli(["edit", str(source), "--model", str(FIXTURES / "sound10"), "--quiet"], capsys)
    assert code == 2 and err == "openmagnet: error: give at least one region to regenerate: --region START_S END_S\n"
