"""One generation request for every face (openmagnet/request.py): the same request gives the same tokens through
the command line's path, the app's engine and the Python API with the same seed; settings are per call, so a
shared model serves concurrent requests with different settings, each with its own, and its stored settings
never change."""
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
    # the Python API
    api_model = load_fixture_model("music10")
    api_model.set_generation_params(temperature=3.5, max_cfg_coef=7.0, decoding_steps=STEPS,
                                    span_arrangement="stride1")
    api = api_model.generate(["happy rock"], return_tokens=True,
                             generator=torch.Generator(device=api_model.device).manual_seed(3))[1]
    assert cli.shape == (1, 4, 500)
    assert torch.equal(cli, app) and torch.equal(cli, api)
    assert model.params is stored  # the faces never set the shared model's settings


def test_per_call_settings_leave_the_model_as_it_is(model):
    stored = model.params
    result = run(model, Request(prompts=["x"], seed=0, duration=1.0,
                                params=dict(decoding_steps=STEPS, temperature=1.5, speed="turbo")))
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
