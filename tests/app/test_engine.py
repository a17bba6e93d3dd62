"""The web app's engine (openmagnet/app/engine.py): request checks, prompt audio, interrupt, files. The page
itself, driven by a browser, is tested in tests/app/test_ui.py."""
import numpy as np
import pytest
import soundfile
import torch

from openmagnet.app.engine import MAX_CLIPS, AppError, Engine, Interrupted, Request, check_request, \
    load_prompt_audio
from openmagnet.app.security import Policy
from tests.app.conftest import EMPTY_PROMPT, FAST, FIXTURE_POLICY, MODEL
from tests.conftest import FIXTURES


def request(**kw) -> Request:
    return Request(**{"model": MODEL, "prompts": "happy rock", "steps": FAST, "seed": 3, "device": "cpu", **kw})


# ---------------------------------------------------------------------------------------------- engine
def test_request_checks_name_the_field():
    with pytest.raises(AppError) as e:
        check_request(request(prompts="  \n \n"))
    assert str(e.value) == EMPTY_PROMPT
    with pytest.raises(AppError, match=r"^Temperature must be a number, got 'hot'\.$"):
        check_request(request(temperature="hot"))
    with pytest.raises(AppError, match=r"^Temperature must be >= 0; got -1\.0\.$"):  # GenerationParams' bounds
        check_request(request(temperature=-1))
    with pytest.raises(AppError, match=r"^Decoding steps for codebook 3 must be a whole number, got 2\.5\.$"):
        check_request(request(steps=(2, 1, 2.5, 1)))
    with pytest.raises(AppError, match=r"^Min CFG \(5\) is above max CFG \(3\)"):
        check_request(request(min_cfg=5, max_cfg=3))
    with pytest.raises(AppError, match=rf"^3 prompts x 3 variations make 9 clips; the page shows at most {MAX_CLIPS}"):
        check_request(request(prompts="a\nb\nc", variations=3))
    checked = check_request(request(prompts="a\n\n b \n", variations=2, seed=-1))
    assert checked.prompts == ["a", "a", "b", "b"]
    assert 0 <= checked.seed < 2**31 - 1  # a random seed is drawn and reported
    assert check_request(request(prompts="", prompt_audio="x.wav")).prompts == [None]  # continuation only


def test_prompt_audio_is_trimmed_with_a_note(tmp_path):
    path = tmp_path / "in.wav"
    soundfile.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, (44100 * 5, 2)).astype("float32"), 44100)
    wav, sr, note = load_prompt_audio(str(path), 32000, 1, 2.0, 9.98)
    assert sr == 44100 and wav.shape == (2, 88200)
    assert note == ("Prompt audio: kept the first 2 s of 5.0 s, resampled 44.1 kHz -> 32 kHz, "
                    "mixed down 2 -> 1 channel(s); the clip continues it.")
    with pytest.raises(AppError, match=r"^Prompt length 12 s is too long"):
        load_prompt_audio(str(path), 32000, 1, 12.0, 9.98)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    with pytest.raises(AppError) as e:
        load_prompt_audio(str(text), 32000, 1, 2.0, 9.98)
    assert str(e.value) == ("The uploaded file (notes.txt) is not audio that can be read: "
                            "upload a wav, flac, ogg or mp3 file.")


def test_engine_generates_files_and_reuses_the_model(tmp_path):
    engine = Engine(tmp_path, policy=FIXTURE_POLICY)
    steps = []
    out = engine.generate(request(variations=2), progress=lambda s, t: steps.append((s, t)))
    assert [c.caption for c in out.clips] == ["happy rock (variation 1)", "happy rock (variation 2)"]
    for clip in out.clips:
        wav, sr = soundfile.read(clip.audio)
        assert sr == 32000 and len(wav) == 320000 and np.abs(wav).max() > 0
        assert clip.image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert steps[-1] == (5, 5) and len(steps) == 5
    assert "seed 3" in out.message and "on **cpu** (float32)" in out.model_info
    first = engine.model(MODEL, "cpu")
    engine.generate(request())
    assert engine.model(MODEL, "cpu") is first  # cached between requests


def test_interrupt_stops_the_decoding_loop(tmp_path):
    engine = Engine(tmp_path, policy=FIXTURE_POLICY)
    seen = []

    def progress(step, total):
        seen.append(step)
        if step == 2:
            assert engine.interrupt("someone else") is False  # only the owner's session can stop it
            assert engine.interrupt("me") is True

    with pytest.raises(Interrupted) as e:
        engine.generate(request(steps=(50, 10, 10, 10)), session="me", progress=progress)
    assert (e.value.step, e.value.total) == (3, 80) and seen == [1, 2]
    assert not list(tmp_path.iterdir())  # nothing written
    assert engine.interrupt() is False  # nothing running any more
    assert len(engine.generate(request(), session="me").clips) == 1  # the flag does not stick


def test_model_errors_are_sentences(tmp_path):
    engine = Engine(tmp_path, policy=Policy(allow_any_model=True))
    with pytest.raises(AppError, match=r"^Could not load model 'facebook/magnet-nope': .*offline"):
        engine.generate(request(model="facebook/magnet-nope"))
    with pytest.raises(AppError, match=r"^Could not load model '/no/such/dir': /no/such/dir: no such local folder"):
        engine.generate(request(model="/no/such/dir"))
    engine = Engine(tmp_path, policy=FIXTURE_POLICY)
    missing = str(FIXTURES / "no_such_model")
    with pytest.raises(AppError, match=rf"^Could not load model '{missing}': {missing}: no such local folder"):
        engine.generate(request(model=missing))
    if not torch.cuda.is_available():
        with pytest.raises(AppError, match=r"^CUDA is not available on this machine \(.*\): choose cpu or auto\.$"):
            engine.generate(request(device="cuda"))


def test_a_model_that_cannot_be_had_keeps_the_loaded_one(tmp_path):
    """Choosing a released model the hub cannot give (offline, not in the cache) is a sentence at once, and the model
    loaded before stays loaded and named (the first-hour report: 46 s, then "No model loaded yet")."""
    engine = Engine(tmp_path, policy=Policy(allow_any_model=True))
    assert len(engine.generate(request()).clips) == 1
    shown = engine.model_info()
    with pytest.raises(AppError, match=r"^Could not load model 'facebook/magnet-medium-10secs': facebook/magnet-medium-"
                                       r"10secs is not a local folder, the Hugging Face hub cannot be reached "
                                       r"\(offline mode is on \(HF_HUB_OFFLINE\)\) and its cache does not hold "
                                       r"state_dict\.bin: use a local model folder .*\.$"):
        engine.generate(request(model="facebook/magnet-medium-10secs"))
    assert engine.model_info() == shown and shown.startswith(f"Model **{MODEL}**")
    assert len(engine.generate(request()).clips) == 1  # still loaded


@pytest.mark.parametrize("kw,shown", [(dict(cast=torch.bfloat16), "bfloat16"),  # the CUDA default
                                      (dict(quantize="int8", dtype="float32"), "int8 feed-forward + float32 attention"),
                                      (dict(quantize="int8-all"), "int8 (every matrix)")])
def test_model_info_shows_the_matrices_precision(tmp_path, kw, shown):
    from openmagnet import MAGNeT
    from openmagnet.quantize import cast_float_matrices

    engine = Engine(tmp_path, policy=FIXTURE_POLICY)
    cast = kw.pop("cast", None)
    model = MAGNeT.get_pretrained(MODEL, device="cpu", **kw)
    if cast is not None:  # bf16 matrices as CUDA loads them (get_pretrained refuses bf16 on a CPU without it)
        cast_float_matrices(model.lm, cast)
    engine._model, engine._model_key = model, (MODEL, "cpu", False)
    assert f"on **cpu** ({shown}) · 32 kHz" in engine.model_info()  # not the float32 text projection


def test_fast_mode_is_loaded_and_shown(tmp_path):
    engine = Engine(tmp_path, policy=FIXTURE_POLICY)
    model = engine.model(MODEL, "cpu", fast=True)
    mode = model.fast_mode  # measured on this machine (runtime.fast_mode)
    assert model.lm.quantized == mode.quantize and model.lm.dtype == mode.dtype and model.lm.banded_attention
    assert ", fast mode) · 32 kHz" in engine.model_info()
    assert engine.model(MODEL, "cpu") is not model  # exact and fast are different models


def test_length_loop_negative_and_edit_checks_name_the_field():
    with pytest.raises(AppError, match=r"^Duration must be from 0 to 120, got 500\.$"):
        check_request(request(duration=500))
    with pytest.raises(AppError, match=r"^Duration 0.05 s is too short: ask for at least 0.1 s"):
        check_request(request(duration=0.05))
    with pytest.raises(AppError, match=r"^Re-masking noise must be a finite number >= 0 \(0 = the reference's "
                                       r"sampler\); got -1\.0\.$"):
        check_request(request(remask_noise=-1))
    with pytest.raises(AppError, match=r"^The region to regenerate is empty \(3 s to 2 s\): set its end after"):
        check_request(request(prompt_audio="x.wav", audio_mode="edit", region_start=3, region_end=2))
    with pytest.raises(AppError, match=r"^Editing a region keeps the upload's length: set Duration to 0"):
        check_request(request(prompt_audio="x.wav", audio_mode="edit", region_start=1, region_end=2, duration=20))
    with pytest.raises(AppError, match=r"^A loop starts from silence: remove the uploaded audio, or untick Loop\.$"):
        check_request(request(prompt_audio="x.wav", loop=True))
    with pytest.raises(AppError, match=r"^Audio mode must be one of continue, edit, got 'mix'\.$"):
        check_request(request(audio_mode="mix"))
    checked = check_request(request(duration=0, negative="  drums \n", remask_noise=3))
    assert checked.duration is None and checked.negative == "drums" and checked.params["remask_noise"] == 3
    assert "remask_noise" not in check_request(request()).params  # the model's own setting is kept
    assert check_request(request(speed="turbo")).params["speed"] == "turbo"
    assert "speed" not in check_request(request()).params  # the reference's decoding
    with pytest.raises(AppError, match=r"^Decoding speed must be one of reference, turbo, got 'warp'\.$"):
        check_request(request(speed="warp"))


def test_engine_makes_long_clips_loops_and_edits(tmp_path):
    engine = Engine(tmp_path / "out", policy=FIXTURE_POLICY)
    out = engine.generate(request(duration=12.5, negative="drums"))
    wav, sr = soundfile.read(out.clips[0].audio)
    assert len(wav) == 12.5 * 32000 and "clip(s) of 12.5 s" in out.message
    out = engine.generate(request())  # the shared model goes back to its window
    assert len(soundfile.read(out.clips[0].audio)[0]) == 320000
    out = engine.generate(request(loop=True))
    assert "a seamless loop" in out.message
    path = tmp_path / "in.wav"
    soundfile.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 32000 * 4).astype("float32"), 32000)
    out = engine.generate(request(prompts="", prompt_audio=str(path), audio_mode="edit", region_start=1,
                                  region_end=2))
    assert len(soundfile.read(out.clips[0].audio)[0]) == 4 * 32000
    assert "Edited 1-2 s of the upload; the rest keeps its codes." in out.message
    assert out.clips[0].caption == "edit"
    with pytest.raises(AppError, match=r"^The region 3-6 s ends after the audio that is edited \(4.00 s\): end it"):
        engine.generate(request(prompt_audio=str(path), audio_mode="edit", region_start=3, region_end=6))
