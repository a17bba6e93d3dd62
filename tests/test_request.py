"""One generation request for every face (openmagnet/request.py): the same request gives the same tokens through
the command line's path, the app's engine and the Python API with the same seed; settings are per call, so a
shared model serves concurrent requests with different settings, each with its own, and its stored settings
never change."""
import re
import threading

import pytest
import torch

from openmagnet import request as request_module
from openmagnet.app import engine as app_engine
from openmagnet.cli import build_parser, generate_request, settings
from openmagnet.config import GenerationParams
from openmagnet.request import Request, run
from tests.app.conftest import FIXTURE_POLICY, MODEL
from tests.conftest import load_fixture_model

STEPS = [2, 1, 1, 1]


@pytest.fixture(scope="module")
def model():
    return load_fixture_model("music10")


def test_the_same_request_gives_the_same_tokens_through_every_face(model, tmp_path):
    stored = model.params
    # the command line: `openmagnet generate "happy rock" --seed 3 --steps 2 1 1 1 ...` as it builds its request
    args = build_parser().parse_args(["generate", "happy rock", "--model", MODEL, "--seed", "3", "--steps", "2", "1",
                                      "1", "1", "--temperature", "3.5", "--max-cfg", "7"])
    cli = run(model, generate_request(args, args.prompts, settings(model, args))).tokens
    # the app: the same settings typed on the page
    page = app_engine.Request(model=MODEL, prompts="happy rock", steps=STEPS, seed=3, device="cpu", temperature=3.5,
                              max_cfg=7.0)
    checked = app_engine.check_request(page)
    app = run(model, app_engine.generation_request(page, checked, None, lambda step, total: None)).tokens
    assert model.params is stored  # the faces never set the shared model's settings
    # the Python API: the settings set on the model
    model.set_generation_params(temperature=3.5, max_cfg_coef=7.0, decoding_steps=STEPS, span_arrangement="stride1")
    try:
        api = model.generate(["happy rock"], return_tokens=True,
                             generator=torch.Generator(device=model.device).manual_seed(3))[1]
    finally:
        model.set_generation_params()
    assert cli.shape == (1, 4, 500)
    assert torch.equal(cli, app) and torch.equal(cli, api)


def test_per_call_settings_leave_the_model_as_it_is(model):
    stored = model.params
    result = run(model, Request(prompts=["x"], seed=0, duration=1.0,
                                params=dict(decoding_steps=STEPS, temperature=1.5, speed="turbo",
                                            span_arrangement="stride1")))
    assert model.params is stored and stored.decoding_steps == (20, 10, 10, 10)
    assert result.params.temperature == 1.5 and result.params.decoding_steps == tuple(STEPS)
    assert result.params.guidance_every == 3 and result.params.speed == "turbo"  # the preset's fields
    assert result.tokens.shape == (1, 4, 50) and result.audio.shape == (1, 1, 32000)
    whole = GenerationParams(decoding_steps=(1, 1, 1, 1))
    assert run(model, Request(prompts=["x"], seed=0, duration=1.0, params=whole)).params is whole
    with pytest.raises(ValueError, match=r"^temperature must be >= 0; got -1$"):
        run(model, Request(prompts=["x"], params=dict(temperature=-1)))
    with pytest.raises(TypeError, match=r"generation settings are set_generation_params\(\) keywords"):
        run(model, Request(prompts=["x"], params=dict(temprature=1.0)))
    with pytest.raises(ValueError, match=r"^mode must be one of text, continue, edit, loop, got 'remix'$"):
        run(model, Request(prompts=["x"], mode="remix"))


def test_concurrent_requests_on_one_model_each_get_their_own_settings(model):
    """Two threads run requests with different settings on the same model at the same time (no lock): each gets
    the tokens its settings give alone."""
    requests = [Request(prompts=["happy rock"], seed=1, params=dict(decoding_steps=STEPS, temperature=t,
                                                                     span_arrangement=arrangement))
                for t, arrangement in ((1.0, "stride1"), (6.0, "nonoverlap"))]
    alone = [run(model, r) for r in requests]
    assert not torch.equal(alone[0].tokens[..., :498], alone[1].tokens[..., :498])
    results = [None, None]
    start = threading.Barrier(2)

    def work(i):
        start.wait()
        results[i] = run(model, requests[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, expected in zip(results, alone, strict=True):
        assert got.params == expected.params
        assert torch.equal(got.tokens, expected.tokens)


def test_two_app_requests_on_the_cached_model_use_their_own_settings(tmp_path, monkeypatch):
    """The app's engine (one cached model shared by every visitor): two visitors' requests in threads, with
    different settings; each generation ran with its visitor's settings, and the cached model kept its own."""
    used = []

    def recording(model, request):
        result = request_module.run(model, request)
        used.append((request.seed, result.params, result.tokens))
        return result

    monkeypatch.setattr(app_engine, "run", recording)
    engine = app_engine.Engine(tmp_path, policy=FIXTURE_POLICY)
    pages = [app_engine.Request(model=MODEL, prompts="happy rock", steps=STEPS, seed=seed, device="cpu",
                                temperature=temperature, span_arrangement=arrangement)
             for seed, temperature, arrangement in ((1, 1.0, "stride1"), (2, 6.0, "nonoverlap"))]
    threads = [threading.Thread(target=engine.generate, args=(page, f"visitor{i}")) for i, page in enumerate(pages)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seed for seed, _, _ in used) == [1, 2]
    model = engine.model(MODEL, "cpu")
    assert model.params == GenerationParams()  # the cached model's own settings (the fixture stores none)
    for seed, params, tokens in used:
        page = pages[seed - 1]
        assert (params.temperature, params.span_arrangement, params.decoding_steps) == \
            (page.temperature, page.span_arrangement, tuple(STEPS))
        alone = run(model, app_engine.generation_request(page, app_engine.check_request(page), None,
                                                         lambda step, total: None))
        assert torch.equal(tokens, alone.tokens)


# ------------------------------------------------------------------------------------------ prompts files
def test_a_prompts_file_is_text_or_json_lines(tmp_path):
    from openmagnet.request import PromptLine, read_prompts_file

    path = tmp_path / "prompts.txt"
    path.write_text('# a comment\nhappy rock\n\n'
                    '{"text": "sad piano", "seed": 7, "duration": 2.5, "negative": "drums"}\n{"text": " jazz "}\n')
    assert read_prompts_file(path) == [PromptLine("happy rock"), PromptLine("sad piano", 7, 2.5, "drums"),
                                       PromptLine("jazz")]
    for line, message in [('{"text": "x", "seed": -1}', 'line 1: "seed" must be a whole number >= 0, got -1'),
                          ('{"text": "x", "length": 3}', 'line 1: a JSON line is an object with "text" and '
                                                         'optionally "seed", "duration", "negative"; got \'length\''),
                          ('{"text": ""}', 'line 1: "text" must be a non-empty string'),
                          ('{"text": "x", "duration": 0}', 'line 1: "duration" must be a positive number of seconds'),
                          ('{"text": "x"', "line 1: not valid JSON"), ("# nothing", "holds no prompt")]:
        path.write_text(line + "\n")
        with pytest.raises(ValueError, match="^" + re.escape(f"{path} {message}")):
            read_prompts_file(path)


def test_launched_shard_reads_torchrun_environment():
    from openmagnet.request import launched_shard

    assert launched_shard({}) == (0, 1)
    assert launched_shard({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    with pytest.raises(ValueError, match=r"^RANK 2 is not between 0 and WORLD_SIZE - 1 \(1\)$"):
        launched_shard({"RANK": "2", "WORLD_SIZE": "2"})


def _written(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.wav"))}


def test_generate_prompts_file_writes_one_clip_per_prompt_and_resumes(tmp_path, capsys):
    from openmagnet.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text('happy rock\n{"text": "sad piano", "seed": 4, "duration": 0.5}\nfast jazz\n')
    out = tmp_path / "out"
    command = ["generate", "--prompts-file", str(prompts), "--model", MODEL, "--out", str(out), "--steps", "2", "1",
               "1", "1", "--duration", "1", "--seed", "1", "--quiet"]
    assert main(command) == 0
    first = _written(out)
    assert sorted(first) == ["00_happy_rock.wav", "01_sad_piano.wav", "02_fast_jazz.wav"]
    import soundfile

    assert soundfile.info(out / "01_sad_piano.wav").frames == 16000  # its own duration; the others --duration's
    assert soundfile.info(out / "00_happy_rock.wav").frames == 32000
    capsys.readouterr()
    assert main(command) == 0  # a second run writes nothing new
    assert _written(out) == first
    assert capsys.readouterr().out == ""
    (out / "01_sad_piano.wav").unlink()  # an interrupted run: what is missing is made, the rest kept
    assert main(command) == 0
    again = _written(out)
    assert sorted(again) == sorted(first) and again["00_happy_rock.wav"] == first["00_happy_rock.wav"]
    assert capsys.readouterr().out.strip() == str(out / "01_sad_piano.wav")
    assert main(["generate", "happy rock", "--prompts-file", str(prompts), "--out", str(out)]) == 2
    assert "--prompts-file gives the prompts: drop the text prompts and --prompt-audio" in capsys.readouterr().err


def test_generate_prompts_file_shards_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node 2` on CPU with the bundled demo model: each process takes its share (i % 2), and
    every prompt is written exactly once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    prompts = tmp_path / "prompts.txt"
    texts = ["happy rock", "sad piano", "fast jazz", "slow ambient pad", "march"]
    prompts.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_ = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--module", "openmagnet", "generate", "--prompts-file", str(prompts), "--out", str(out),
                           "--steps", "2", "1", "1", "1", "--duration", "1", "--seed", "0", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert run_.returncode == 0, run_.stderr[-2000:]
    printed = [line for line in run_.stdout.splitlines() if line.endswith(".wav")]
    expected = [f"{i:02d}_{text.replace(' ', '_')}.wav" for i, text in enumerate(texts)]
    assert sorted(Path(line).name for line in printed) == expected  # each written once, by one process
    assert sorted(p.name for p in out.iterdir()) == expected
