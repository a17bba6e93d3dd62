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


def test_the_prompt_may_follow_the_options():
    """`openmagnet edit song.wav --region 3.0 5.5 "a drum fill" --crossfade 0.05 --out DIR` (the README's example)
    parses: argparse alone took positionals before the first option only ("unrecognized arguments: a drum fill");
    `generate` likewise takes prompts after its options. A second loose word is still an error."""
    import pytest

    from openmagnet.cli import build_parser, parse_args

    args = parse_args(build_parser(), ["edit", "song.wav", "--region", "3.0", "5.5", "a drum fill", "--crossfade",
                                       "0.05", "--out", "DIR"])
    assert (args.input, args.prompt, args.region, args.crossfade, args.out) == \
        ("song.wav", "a drum fill", [[3.0, 5.5]], 0.05, "DIR")
    before = parse_args(build_parser(), ["edit", "song.wav", "a drum fill", "--region", "3.0", "5.5"])
    assert (before.input, before.prompt) == ("song.wav", "a drum fill")
    args = parse_args(build_parser(), ["generate", "happy rock", "--seed", "1", "80s synth pop"])
    assert args.prompts == ["happy rock", "80s synth pop"] and args.seed == 1
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["edit", "song.wav", "fill", "--region", "1", "2", "another"])
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["generate", "x", "--no-such-flag"])


def test_edit_with_the_prompt_after_the_region(tmp_path, capsys):
    source = tmp_path / "song.wav"
    t = np.arange(3 * 16000) / 16000
    sf.write(source, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    code, out, err = run_cli(["edit", str(source), "--region", "1.0", "2.0", "birds", "--crossfade", "0.05",
                              "--model", str(FIXTURES / "sound10"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0, err
    assert sf.read(out.split()[0])[0].shape == (3 * 16000,)


def test_generate_a_loop(tmp_path, capsys):
    """`openmagnet generate --loop` writes what `model.generate(..., loop=True)` makes with the same seed and
    settings: one window, the wrap regenerated (README, Loops)."""
    import torch

    from openmagnet import MAGNeT, audio_write

    args = ["generate", "funk groove", "--loop", "--model", str(FIXTURES / "sound10"), "--out", str(tmp_path / "o"),
            "--steps", "2", "1", "1", "1", "--seed", "4", "--quiet"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    written, sr = sf.read(out.strip())
    model = MAGNeT.get_pretrained(str(FIXTURES / "sound10"), device="cpu")
    model.set_generation_params(**model.recommended_params(decoding_steps=[2, 1, 1, 1]))
    torch.manual_seed(4)
    wav = model.generate(["funk groove"], loop=True, generator=torch.Generator().manual_seed(4))
    expected, _ = sf.read(audio_write(tmp_path / "api", wav[0], sr, strategy="loudness", loudness_compressor=True))
    capsys.readouterr()  # the API's own warnings
    assert sr == 16000 and written.shape == (10 * 16000,) and np.array_equal(written, expected)
    code, _, err = run_cli([*args, "--duration", "12"], capsys)
    assert code == 2 and err == "openmagnet: error: --loop makes one window at most: give --duration 10 or less " \
                                "(or leave it out)\n"
    code, _, err = run_cli([*args, "--prompt-audio", out.strip()], capsys)
    assert code == 2 and err == "openmagnet: error: --loop makes a clip from nothing: drop --prompt-audio (or --loop)\n"
