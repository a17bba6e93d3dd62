"""The command line (openmagnet/cli.py), driven through cli.main: exit codes, files written and the one-line
errors (`openmagnet: error: ...`) of each sub-command. A module's own command tests sit with it
(train/test_command.py, train/codec/test_command.py, data/test_manifest.py, data/test_synth.py)."""
import contextlib
import io
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import FIXTURES
from tests.train_utils import write_audio_set
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
    (["generate", "x", "--model", "./missing_dir"], "openmagnet: error: ./missing_dir: no such local folder or file\n"),
    (["generate", "--model", "x"], 'openmagnet: error: give at least one text prompt, e.g. openmagnet generate "happy rock"\n'),  # noqa: E501
    (["generate", "  ", "--model", "x"], "openmagnet: error: a text prompt is empty: remove it or write a description\n"),  # noqa: E501
])
def test_cli_errors_are_one_line(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err == message


def test_out_is_checked_before_any_model_loads(tmp_path, capsys, monkeypatch):
    """A bad --out fails at once in one line (the first-hour report: `--out /proc/x` after 50 s of work, `--out afile`
    a FileExistsError traceback), before any model is loaded."""
    from openmagnet.api import MAGNeT

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr(MAGNeT, "get_pretrained", staticmethod(never))
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(afile, f"--out {afile}: is a file, not a folder; name a folder (it is created if needed)"),
             (afile / "sub", f"--out {afile}/sub: cannot write there: not a directory; name a folder you can "
                             f"write to")]
    if os.path.isdir("/proc/self"):  # Linux: nothing can be created in /proc, root or not
        cases.append(("/proc/x", "--out /proc/x: cannot write there: no such file or directory; name a folder you "
                                 "can write to"))
    for out, message in cases:
        for command in (["generate", "x"], ["edit", str(afile), "--region", "0", "1"]):
            code, _, err = run_cli([*command, "--out", str(out), "--quiet"], capsys)
            assert (code, err) == (2, f"openmagnet: error: {message}\n"), command


def test_a_rerun_never_overwrites_silently(tmp_path, capsys):
    """The same prompt into the same --out twice keeps both clips (00_x.wav, 00_x-2.wav); --overwrite replaces."""
    args = ["generate", "happy rock", "--model", str(FIXTURES / "sound10"), "--out", str(tmp_path / "o"), "--steps",
            "1", "1", "1", "1", "--quiet"]
    code, first, err = run_cli([*args, "--seed", "1"], capsys)
    assert code == 0, err
    original = open(first.strip(), "rb").read()
    code, second, err = run_cli([*args, "--seed", "2"], capsys)
    assert code == 0 and second.strip() == str(tmp_path / "o" / "00_happy_rock-2.wav"), (second, err)
    assert open(first.strip(), "rb").read() == original
    code, third, err = run_cli([*args, "--seed", "2", "--overwrite"], capsys)
    assert code == 0 and third == first
    assert open(first.strip(), "rb").read() == open(second.strip(), "rb").read()  # seed 2's clip replaced it
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["00_happy_rock-2.wav", "00_happy_rock.wav"]


def test_a_failed_run_leaves_no_empty_out_folder(tmp_path, capsys):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    code, _, err = run_cli(["generate", "x", "--model", str(empty), "--out", str(tmp_path / "new" / "out")], capsys)
    assert code == 2 and err.startswith(f"openmagnet: error: {empty} has no state_dict.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_model"]


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
    assert code == 2 and err == "openmagnet: error: --top-p must be in [0, 1] (0 disables nucleus sampling); got 3.0\n"


def test_cli_int8_mode(tmp_path, capsys):
    code, out, err = run_cli(["generate", "happy rock", "--model", str(FIXTURES / "music10"), "--quantize", "int8",
                              "--steps", "1", "1", "1", "1", "--quiet", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    wav, sr = sf.read(out.split()[0])
    assert sr == 32000 and wav.shape == (500 * 640,) and abs(wav).max() > 0


def test_cli_fast_prints_its_measured_choice(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENMAGNET_CACHE", str(tmp_path / "cache"))
    args = ["generate", "happy rock", "--model", str(FIXTURES / "music10"), "--fast", "--steps", "1", "1", "1", "1",
            "--out", str(tmp_path), "--duration", "1"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert re.search(r"^fast mode: .*measured now, cached in .*kernels.*\.json$", err, re.M)
    code, out, err = run_cli(args + ["--fast-recheck"], capsys)
    assert code == 0 and re.search(r"^fast mode: .*measured now", err, re.M)
    code, out, err = run_cli(args, capsys)
    assert code == 0 and re.search(r"^fast mode: .*cached in ", err, re.M)
    code, _, err = run_cli(["generate", "x", "--model", str(FIXTURES / "music10"), "--fast-recheck"], capsys)
    assert code == 2 and err == "openmagnet: error: --fast-recheck times the kernels of --fast again: add --fast\n"


def test_cli_speed_turbo_does_half_the_work(tmp_path, capsys, monkeypatch):
    from openmagnet import request

    passes = []
    original = request.run

    def recording(model, generation):  # the one path from the command line to a generation
        before = model.forward_passes
        out = original(model, generation)
        passes.append((out.params.speed, model.forward_passes - before))
        return out
    monkeypatch.setattr(request, "run", recording)
    base = ["generate", "happy rock", "--model", str(FIXTURES / "music10"), "--steps", "4", "2", "2", "2",
            "--duration", "0.5", "--quiet", "--out"]
    assert run_cli(base + [str(tmp_path / "a")], capsys)[0] == 0
    assert run_cli(base + [str(tmp_path / "b"), "--speed", "turbo"], capsys)[0] == 0
    # turbo: codebook 0 runs 4 steps with the null rows at the first only (the last has coefficient 1), codebooks
    # 1-3 one fully masked step each (half of 2), with both halves: 4 + 1 + 3 * 2
    assert passes == [(None, 2 * 10), ("turbo", 11)]


def test_cli_float16_on_cpu_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["generate", "x", "--model", str(FIXTURES / "music10"), "--dtype", "float16",
                            "--device", "cpu", "--quiet", "--out", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("openmagnet: error: --dtype float16 on this CPU is a trap: float16 matrix "
                                        "products run at about 1 GFLOP/s on CPU")
    assert err.endswith("or leave --dtype out\n") and "--fast (here: " in err and "fast=True" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,message", [
    (["--duration", "-3"], "--duration must be a positive number of seconds, got -3"),
    (["--extend-stride", "0"], "--extend-stride must be a positive number of seconds, got 0"),
    (["--top-p", "3"], "--top-p must be in [0, 1] (0 disables nucleus sampling); got 3.0"),
    (["--temperature", "-1"], "--temperature must be >= 0; got -1.0"),
    (["--steps", "0", "1", "1", "1"], "--steps must be 4 positive integers (one per codebook), e.g. [20, 10, 10, 10]; "
                                      "got [0, 1, 1, 1]"),
    (["--prompt-audio", "nope.wav"], "--prompt-audio nope.wav: no such audio file"),
    (["--fast", "--dtype", "bfloat16"], "--fast chooses the dtype and the int8 mode for this machine: drop --dtype and "
                                        "--quantize, or drop --fast"),
    (["--quantize", "int8", "--device", "cuda"], "--quantize runs on the CPU only: drop it, or use --device cpu (not "
                                                 "cuda)"),
])
def test_generate_flags_are_checked_in_flags_before_loading(flags, message, tmp_path, capsys, monkeypatch):
    """Settings are refused in the command line's words (not "set model.duration" or "use fast=True") and before
    any model is loaded (--prompt-audio was checked after)."""
    from openmagnet.api import MAGNeT

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded first")

    monkeypatch.setattr(MAGNeT, "get_pretrained", staticmethod(never))
    code, _, err = run_cli(["generate", "x", "--out", str(tmp_path), *flags], capsys)
    assert (code, err) == (2, f"openmagnet: error: {message}\n")


def test_an_error_before_the_first_step_prints_no_progress_bar(tmp_path, capsys):
    """A prompt longer than the clip is found after loading, before decoding: stderr has the model's line and the
    error's, and no empty "decoding: 0%" bar between them."""
    prompt = tmp_path / "long.wav"
    sf.write(prompt, np.zeros(11 * 16000), 16000)
    code, _, err = run_cli(["generate", "--prompt-audio", str(prompt), "--model", str(FIXTURES / "sound10"),
                            "--out", str(tmp_path / "o")], capsys)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 2 and "decoding" not in err, err
    assert lines[1] == ("openmagnet: error: the prompt is 11.00 s long but this model generates 10 s: trim the prompt "
                        "to less than 10 s")


# ------------------------------------------------------------------------------------------------ every sub-command
# One tiny pipeline for the module, through cli.main only: data index -> train (2 steps of a 32-wide, 1-layer
# LM on the fixture's codec) -> export; generate and export --bundle then use the exported model.
def call(argv):
    """(exit code, stdout, stderr) of cli.main(argv), captured without capsys (usable in module fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_audio_set(root / "audio", seconds=2.0)
    steps = {"index": call(["data", "index", str(root / "audio"), "--out", str(root / "manifest")])}
    steps["train"] = call(["train", "--data", str(root / "manifest"), "--out", str(root / "run"),
                           "--model-scale", "tiny", "--codec", str(FIXTURES / "music10"), "--segment-duration", "1",
                           "--batch-size", "2", "--max-steps", "2", "--num-workers", "0", "--quiet",
                           "--set", "dim=32", "--set", "num_heads=2", "--set", "num_layers=1", "--set", "save_every=2",
                           "--set", "valid_every=2", "--set", "valid_batches=1", "--set", "warmup=0"])
    steps["export"] = call(["export", str(root / "run"), "--out", str(root / "model")])
    return root, steps


def test_data_index_writes_the_manifest(pipeline):
    root, steps = pipeline
    assert steps["index"] == (0, f"indexed 4 files (0 skipped) -> {root}/manifest/data.jsonl\n", "")
    assert len((root / "manifest" / "data.jsonl").read_text().splitlines()) == 4


def test_data_index_of_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "index", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == (f"openmagnet: error: no audio files in {tmp_path / 'empty'} (looked for .wav, "
                                       ".flac, .ogg, .mp3); add audio files or pass other extensions\n")
    assert not (tmp_path / "m").exists()


def test_train_writes_a_run(pipeline):
    root, steps = pipeline
    code, out, err = steps["train"]
    assert code == 0 and err == "", err
    run = root / "run"
    assert re.fullmatch(rf"trained to step 2; last valid ce \d+\.\d{{4}}; run folder {re.escape(str(run))} "
                        rf"\(export it with `openmagnet export {re.escape(str(run))} --out MODEL_DIR`\)",
                        out.splitlines()[-1])
    assert (run / "run.json").is_file() and (run / "checkpoints" / "step_00000002.pt").is_file()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()][-1] == 2


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset 'nope': use one of magnet_32khz, audio_magnet_16khz"),
    (["--set", "lr"], "--set takes KEY=VALUE, got 'lr'"),
])
def test_train_bad_settings(pipeline, tmp_path, capsys, args, message):
    root, _ = pipeline
    code = main(["train", "--data", str(root / "manifest"), "--out", str(tmp_path / "run"), "--quiet", *args])
    assert (code, capsys.readouterr().err) == (2, f"openmagnet: error: {message}\n")
    assert not (tmp_path / "run").exists()


def test_export_writes_a_loadable_model(pipeline):
    root, steps = pipeline
    assert steps["export"] == (0, f"exported {root / 'run'} -> {root / 'model'}\n", "")
    assert {"state_dict.bin", "compression_state_dict.bin", "model.safetensors"} <= {
        p.name for p in (root / "model").iterdir()}


def test_export_never_overwrites_a_model_silently(pipeline, tmp_path, capsys):
    root, _ = pipeline
    out = tmp_path / "model"
    assert main(["export", str(root / "run"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["export", str(root / "run"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"openmagnet: error: --out {out} already holds a model (state_dict.bin, "
                                       f"compression_state_dict.bin, model.safetensors): add --overwrite to replace "
                                       f"it, or name another folder\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["export", str(root / "run"), "--out", str(out), "--overwrite"]) == 0


def test_export_bundle(pipeline, tmp_path, capsys):
    root, _ = pipeline
    assert main(["export", str(root / "model"), "--bundle", "--out", str(tmp_path / "bundle")]) == 0
    assert capsys.readouterr().out == f"exported {root / 'model'} -> {tmp_path / 'bundle'}\n"
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["compression.safetensors", "model.safetensors"]


def test_export_bundle_refuses_what_it_cannot_bundle(pipeline, tmp_path, capsys):
    root, _ = pipeline
    assert main(["export", str(root / "run"), "--bundle", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == (f"openmagnet: error: {root / 'run'} has no state_dict.bin: a MAGNeT model "
                                       "directory holds state_dict.bin and compression_state_dict.bin (audiocraft's "
                                       "layout), or config.json, model.safetensors and compression_model.safetensors "
                                       "(MAGNeT.save_pretrained)\n")
    hf = FIXTURES / "music10_hf"
    assert main(["export", str(hf), "--bundle", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err == (f"openmagnet: error: {hf}: its codec is a pointer to 'facebook/encodec_32khz', "
                                       "which needs the hub; bundle a model trained with a full codec\n")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_generate_with_the_exported_model(pipeline, tmp_path, capsys):
    root, _ = pipeline
    args = ["generate", "a calm sine tone", "--model", str(root / "model"), "--out", str(tmp_path), "--steps", "1",
            "1", "1", "1", "--seed", "0", "--quiet"]
    code, out, err = run_cli(args, capsys)
    assert (code, out) == (0, f"{tmp_path}/00_a_calm_sine_tone.wav\n")
    # a model trained for two steps may collapse onto few codes: then one warning line, nothing else
    assert err == "" or re.fullmatch(r"openmagnet: warning: the sampling collapsed: one code fills more than 30% of "
                                     r"the frames \(.*\); try --remask-noise 3 \(now 0\) or --max-cfg 5 \(now 10\)\n",
                                     err), err
    wav, sr = sf.read(out.strip())
    assert sr == 32000 and wav.shape == (32000,)  # the run's 1 s segment


def labelled_clips(folder, n=2, sr=22050):
    """n clips named as `openmagnet data synth` names them, with side-car labels (tempo and key)."""
    audio = folder / "audio"
    audio.mkdir(parents=True)
    t = np.arange(2 * sr) / sr
    for i in range(n):
        sf.write(audio / f"clip_{i:06d}.wav", 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t), sr)
        (audio / f"clip_{i:06d}.json").write_text(json.dumps({"bpm": 100 + 20 * i, "key": "a minor"}))
    return folder


def test_eval_adherence_prints_the_table_and_writes_json(tmp_path, capsys):
    pytest.importorskip("librosa", reason="needs the eval extra: pip install -e '.[eval]'")
    labels = labelled_clips(tmp_path / "labels")
    assert main(["eval", "adherence", "--labels", str(labels), "--audio", str(labels / "audio"),
                 "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| audio | clips | tempo acc1 |") and "| generated | 2 |" in out
    rows = json.loads((tmp_path / "m.json").read_text())
    assert list(rows) == ["real rendered clips (ceiling)", "generated", "shuffled prompts (floor)", "margins"]
    assert rows["generated"] == rows["real rendered clips (ceiling)"] and rows["generated"]["clips"] == 2
    # generated minus floor, with bootstrap intervals (no classifier: no family row)
    assert list(rows["margins"]) == ["tempo_acc2", "key_weighted"] and "| generated - floor | margin |" in out


def test_eval_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["train-classifier", "--data", str(tmp_path), "--out", str(tmp_path / "c.npz"), "--max-clips", "1"],
         "--max-clips must be >= 2, got 1"),
        (["adherence", "--labels", str(tmp_path / "empty")],
         f"no side-car .json labels in {tmp_path / 'empty'}; pass a folder written by `openmagnet data synth`"),
        (["adherence", "--labels", str(tmp_path / "empty"), "--classifier", str(tmp_path / "no.npz")],
         f"no family classifier at {tmp_path / 'no.npz'}; train one: openmagnet eval train-classifier"),
    ]
    for args, message in cases:
        assert main(["eval", *args, "--quiet"]) == 2
        assert capsys.readouterr().err == f"openmagnet: error: {message}\n"
