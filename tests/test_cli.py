"""The command line (openmagnet/cli.py), driven through cli.main: exit codes, files written and the one-line
errors (`openmagnet: error: ...`) of each sub-command. A module's own command tests sit with it
(train/test_command.py, train/codec/test_command.py, data/test_manifest.py, data/test_synth.py)."""
import os

import pytest
import soundfile as sf

from tests.conftest import FIXTURES
from openmagnet.cli import main


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_generates_wav_files(tmp_path, capsys):
    args = ["generate", "happy rock", "calm piano", "--model", str(FIXTURES / "music10"), "--out",
            str(tmp_path), "--steps", "2", "1", "1", "1", "--seed", "3", "--quiet"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    paths = out.split()
    assert [os.path.basename(p) for p in paths] == ["00_happy_rock.wav", "01_calm_piano.wav"]
    wav, sr = sf.read(paths[0])
    assert sr == 32000 and wav.shape == (500 * 640,)  # stride1 by default: all 500 frames
    first = open(paths[0], "rb").read()
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and open(out.split()[0], "rb").read() == first  # --seed reproduces


def test_cli_continuation_and_flac(tmp_path, capsys):
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, [[0.1, -0.1]] * 22050, 44100)  # 0.5 s stereo
    code, out, err = run_cli(["generate", "--prompt-audio", str(prompt), "--model", str(FIXTURES / "sound10"),
                              "--out", str(tmp_path / "o"), "--steps", "1", "1", "1", "1", "--format", "flac",
                              "--quiet"], capsys)
    assert code == 0, err
    wav, sr = sf.read(out.split()[0])
    assert sr == 16000 and wav.shape == (500 * 320,)


@pytest.mark.parametrize("args,message", [
    (["generate", "x", "--model", "./missing_dir"], "openmagnet: error: ./missing_dir: no such file or directory\n"),
    (["generate", "--model", "x"], 'openmagnet: error: give at least one text prompt, e.g. openmagnet generate "happy rock"\n'),  # noqa: E501
    (["generate", "  ", "--model", "x"], "openmagnet: error: a text prompt is empty: remove it or write a description\n"),  # noqa: E501
])
def test_cli_errors_are_one_line(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err == message


@pytest.mark.parametrize("device,message", [
    ("cuda", "CUDA is not available on this machine (no NVIDIA GPU, or a CPU-only torch build)"),
    ("mps", "MPS (the Apple GPU) is not available on this machine"),
    ("gpu", "unknown device 'gpu'"),
])
def test_cli_missing_device_is_one_line(tmp_path, capsys, monkeypatch, device, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    code, _, err = run_cli(["generate", "x", "--model", str(FIXTURES / "music10"), "--device", device, "--quiet",
                            "--out", str(tmp_path)], capsys)
    assert code == 2
    assert err == f"openmagnet: error: {message}: use --device cpu, or leave --device out for the best available\n"


def test_cli_bad_top_p(tmp_path, capsys):
    code, _, err = run_cli(["generate", "x", "--model", str(FIXTURES / "music10"), "--top-p", "3", "--quiet",
                            "--out", str(tmp_path)], capsys)
    assert code == 2 and err == "openmagnet: error: top_p must be in [0, 1] (0 disables nucleus sampling); got 3.0\n"


def test_cli_int8_mode(tmp_path, capsys):
    code, out, err = run_cli(["generate", "happy rock", "--model", str(FIXTURES / "music10"), "--quantize", "int8",
                              "--steps", "1", "1", "1", "1", "--quiet", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    wav, sr = sf.read(out.split()[0])
    assert sr == 32000 and wav.shape == (500 * 640,) and abs(wav).max() > 0


def test_cli_float16_on_cpu_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["generate", "x", "--model", str(FIXTURES / "music10"), "--dtype", "float16",
                            "--device", "cpu", "--quiet", "--out", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("openmagnet: error: dtype=torch.float16 on CPU is a trap: float16 matrix "
                                        "products run at about 1 GFLOP/s on CPU")
    assert len(err.strip().splitlines()) == 1
