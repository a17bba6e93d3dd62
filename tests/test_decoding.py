"""The decoding schedule and selection rules, against values from SPEC §3 and invariants."""
import dataclasses
import math

import pytest
import torch

from tests.conftest import load_fixture_model
from openmagnet.config import GenerationParams
from openmagnet.decoding import (DONT_REMASK, cfg_coef, generate_tokens, least_probable_spans, mask_rate,
                                 noisy_scores, num_to_mask, spans_mask, temperature)


def test_nonoverlap_mask_counts_for_498_frames():
    """SPEC §3.3: T=498 (166 chunks), N=20 masks 166, 165, 163, 160, 157, ..., 53, 40, 27, 13, 1."""
    schedule = torch.linspace(0, 1, 20)
    counts = [num_to_mask(mask_rate(schedule, i), 166) for i in range(20)]
    assert counts[:5] == [166, 165, 163, 160, 157]
    assert counts[-5:] == [53, 40, 27, 13, 1]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_last_mask_rate_is_slightly_negative():
    rate = mask_rate(torch.linspace(0, 1, 10), 9)
    assert -1e-7 < rate.item() < 0
    assert num_to_mask(rate, 500) == 1
    assert mask_rate(torch.linspace(0, 1, 1), 0).item() == 1.0  # N = 1: one fully masked step


def test_cfg_and_temperature_schedules():
    assert cfg_coef(torch.tensor(1.0), 10.0, 1.0) == 10.0
    assert cfg_coef(torch.tensor(0.0), 20.0, 1.0) == 1.0
    assert temperature(3.0, 0, 20) == pytest.approx(2.85)
    assert temperature(3.0, 19, 20) == 0.01
    assert temperature(3.0, 10, 10) == 0.01


def test_spans_mask_covers_and_truncates():
    mask = spans_mask(torch.tensor([0, 4, 9]), 10, 3)[0, 0]
    assert mask.tolist() == [True, True, True, False, True, True, True, False, False, True]


def test_least_probable_spans_prefers_low_confidence_and_skips_frozen():
    T = 30
    scores = torch.full((1, 1, T), 0.1)
    scores[..., 12:15] = 5.0           # one clearly unconfident span
    scores[..., :6] = DONT_REMASK       # frozen (prompt)
    mask = least_probable_spans(scores, 3, 3)[0, 0]
    assert mask[12:15].all() and mask.sum() == 3
    mask = least_probable_spans(scores, 12, 3)[0, 0]
    assert not mask[:6].any()
    assert abs(int(mask.sum()) - 12) <= 3


def test_least_probable_spans_masks_at_least_one_span():
    mask = least_probable_spans(torch.zeros(1, 1, 20), 1, 3)
    assert mask.sum() == 3


def test_prompt_frames_never_change_and_callback_counts():
    calls = []
    torch.manual_seed(0)

    def logits_fn(codes, stage, coef):
        return torch.randn(codes.shape[0], codes.shape[-1], 16)

    prompt = torch.randint(0, 16, (2, 4, 7))
    params = GenerationParams(decoding_steps=(3, 2, 2, 2), span_arrangement="stride1")
    codes = generate_tokens(logits_fn, 2, 20, 4, 16, params, prompt=prompt,
                            callback=lambda s, t: calls.append((s, t)))
    assert torch.equal(codes[..., :7], prompt)
    assert codes.shape == (2, 4, 20) and (codes < 16).all()
    assert calls == [(i, 9) for i in range(1, 10)]
    codes = generate_tokens(logits_fn, 2, 20, 4, 16, GenerationParams(decoding_steps=(3, 2, 2, 2)), prompt=prompt)
    assert codes.shape == (2, 4, 18) and torch.equal(codes[..., :7], prompt)


def test_prompt_as_long_as_the_output_is_refused():
    with pytest.raises(ValueError, match="the prompt has 20 frames but the model generates 20"):
        generate_tokens(lambda *a: None, 1, 20, 4, 16, GenerationParams(), prompt=torch.zeros(1, 4, 20).long())


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_sampling_is_reproducible_with_a_generator(arrangement):
    model = load_fixture_model("music10")
    model.set_generation_params(decoding_steps=[3, 2, 2, 2], span_arrangement=arrangement)
    try:
        runs = [model.generate(["happy rock", "jazz"], return_tokens=True,
                               generator=torch.Generator().manual_seed(seed))[1] for seed in (7, 7, 8)]
    finally:
        model.set_generation_params()
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (250, 0.0), (0, 0.0)])
def test_extreme_settings_stay_finite(top_k, top_p):
    """Temperature 0.01 and CFG 10 (upstream #564 reported inf/nan probabilities)."""
    model = load_fixture_model("music10")
    model.set_generation_params(temperature=0.01, max_cfg_coef=10.0, min_cfg_coef=10.0, top_k=top_k, top_p=top_p,
                                decoding_steps=[2, 1, 1, 1])
    try:
        audio, tokens = model.generate(["happy rock"], return_tokens=True, generator=torch.Generator().manual_seed(0))
    finally:
        model.set_generation_params()
    assert torch.isfinite(audio).all()
    assert ((tokens >= 0) & (tokens < 2048)).all()
    assert math.isfinite(float(audio.abs().max()))


def test_top_code_share():
    from openmagnet.decoding import top_code_share

    tokens = torch.tensor([[[1, 2, 3, 4], [5, 5, 5, 5]], [[0, 0, 1, 1], [9, 8, 9, 9]]])  # [B=2, K=2, T=4]
    assert torch.equal(top_code_share(tokens), torch.tensor([[0.25, 1.0], [0.5, 0.75]]))


def test_noisy_scores_keep_frozen_units_and_vanish_at_scale_zero():
    scores = torch.tensor([[[0.5, DONT_REMASK, 2.0, DONT_REMASK, 1.0]]])
    noisy = noisy_scores(scores, 3.0, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[scores == DONT_REMASK], scores[scores == DONT_REMASK])
    assert not torch.equal(noisy, scores)
    assert torch.equal(noisy_scores(scores, 0.0, torch.Generator().manual_seed(0)), scores)


def test_remask_noise_must_be_finite_and_non_negative():
    for bad in (-1.0, float("inf"), float("nan"), True, "3"):
        with pytest.raises(ValueError, match="remask_noise must be a finite number >= 0"):
            GenerationParams(remask_noise=bad)


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_remask_noise_keeps_fixed_frames_and_is_reproducible(arrangement):
    def logits_fn(codes, stage, coef):
        return torch.randn(codes.shape[0], codes.shape[-1], 16, generator=torch.Generator().manual_seed(stage))

    prompt = torch.randint(0, 16, (2, 4, 7), generator=torch.Generator().manual_seed(0))
    noisy = GenerationParams(decoding_steps=(4, 2, 2, 2), span_arrangement=arrangement, remask_noise=2.0)
    runs = [generate_tokens(logits_fn, 2, 21, 4, 16, noisy, prompt=prompt, generator=torch.Generator().manual_seed(s))
            for s in (5, 5)]
    plain = generate_tokens(logits_fn, 2, 21, 4, 16, dataclasses.replace(noisy, remask_noise=0.0), prompt=prompt,
                            generator=torch.Generator().manual_seed(5))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0][..., :7], prompt)
    assert ((runs[0] >= 0) & (runs[0] < 16)).all()
    assert not torch.equal(runs[0], plain)


def test_remask_noise_breaks_a_self_reinforcing_code():
    """The demo model's failure in miniature: code 0 grows more likely the more of the clip it already fills
    (as the codec's silence does). Confidence re-masking keeps it wherever it is sampled and it spreads;
    noise on the confidence lets the other codes survive the early steps."""
    card, frames = 32, 100
    base = torch.randn(1, frames, card, generator=torch.Generator().manual_seed(1))

    def logits_fn(codes, stage, coef):
        current = codes[:, stage]
        share = (current == 0).float().mean(-1, keepdim=True)
        logits = base.expand(codes.shape[0], -1, -1).clone()
        logits[..., 0] += 1.0 + 12.0 * share
        return logits

    def share_of_code_0(noise):
        params = GenerationParams(decoding_steps=(20, 10, 10, 10), span_arrangement="stride1", remask_noise=noise)
        return sum(float((generate_tokens(logits_fn, 1, frames, 1, card, params,
                                          generator=torch.Generator().manual_seed(seed))[0, 0] == 0).float().mean())
                   for seed in range(8)) / 8

    assert share_of_code_0(3.0) < share_of_code_0(0.0) - 0.15


# ------------------------------------------------------------------------------------------------ doing less work
class TableModel:
    """A GuidedFn whose logits depend on the codes (each frame sees its neighbours' codes at every codebook),
    with a separate null half; counts forward-pass equivalents like api.GuidedLogits."""

    def __init__(self, card=16, n_q=4, seed=0, scale=1.0, static=False):
        g = torch.Generator().manual_seed(seed)
        self.tables = torch.randn(2, n_q, card + 1, card, generator=g) * scale  # [cond/null, K, card + 1, N]
        self.positions = torch.randn(2, 64, card, generator=g) * scale  # [cond/null, T, N]
        self.static, self.passes = static, 0

    def _half(self, codes, stage, which):
        if self.static:  # the logits do not depend on the codes
            return self.positions[which, :codes.shape[-1]].expand(codes.shape[0], -1, -1).clone()
        tables = self.tables[which]
        out = sum(tables[k][codes[:, k]] for k in range(codes.shape[1]))  # [B, T, N]
        return out + 0.5 * out.roll(1, dims=1) + 0.25 * tables[stage][codes[:, stage]].roll(-1, dims=1)

    def pair(self, codes, stage):
        self.passes += 2
        return self._half(codes, stage, 0), self._half(codes, stage, 1)

    def cond(self, codes, stage):
        self.passes += 1
        return self._half(codes, stage, 0)

    def __call__(self, codes, stage, coef):
        from openmagnet.decoding import mix_guidance
        return mix_guidance(*self.pair(codes, stage), coef)


def _run(params, model=None, seed=0, prompt=None, infill=None, frames=24, batch=2, calls=None):
    model = model or TableModel()
    codes = generate_tokens(model, batch, frames, 4, 16, params, prompt=prompt, infill=infill,
                            generator=torch.Generator().manual_seed(seed),
                            callback=None if calls is None else lambda s, t: calls.append((s, t)))
    return codes, model.passes


def test_guidance_every_step_is_the_reference_bit_for_bit():
    from openmagnet.decoding import guided_logits

    model, codes = TableModel(), torch.randint(0, 17, (2, 4, 24), generator=torch.Generator().manual_seed(1))
    diff = None  # no guidance difference before the first step
    for step, coef in enumerate([10.0, 7.3, 2.0, 1.5]):
        logits, diff = guided_logits(model, codes, 1, coef, step, 1, diff)
        assert torch.equal(logits, model(codes, 1, coef))
    for arrangement in ("nonoverlap", "stride1"):
        params = GenerationParams(decoding_steps=(5, 3, 3, 3), span_arrangement=arrangement, use_sampling=False)
        exact, passes = _run(params)
        same, _ = _run(dataclasses.replace(params, guidance_every=1, confidence_stop=0.0, fine_step_share=1.0))
        assert torch.equal(exact, same) and passes == 2 * 14


def test_reused_guidance_is_exact_when_the_difference_does_not_change():
    """Logits that do not depend on the codes have a constant cond - null difference: reusing it changes nothing
    (greedy), while the null rows ran at a third of the steps."""
    params = GenerationParams(decoding_steps=(9, 6, 6, 6), span_arrangement="stride1", use_sampling=False)
    exact, passes = _run(params, TableModel(static=True))
    reused, fewer = _run(dataclasses.replace(params, guidance_every=3), TableModel(static=True))
    assert torch.equal(exact, reused) and fewer < passes


@pytest.mark.parametrize("speed, steps, passes", [
    (dict(), (20, 10, 10, 10), 100),
    (dict(guidance_every=3), (20, 10, 10, 10), 20 + 7 + 3 * (10 + 3)),  # null rows at 0, 3, ...; none at coef 1
    (dict(fine_step_share=0.5), (20, 5, 5, 5), 2 * 35),
    (dict(guidance_every=3, fine_step_share=0.5), (20, 5, 5, 5), 48),  # the turbo preset: >= 2x fewer
    (dict(guidance_every=2), (4, 1, 1, 1), 4 + 2 + 3 * 2),  # a one-step stage is fully masked: coefficient 10
])
def test_forward_passes_are_counted_and_planned(speed, steps, passes):
    from openmagnet.decoding import planned_passes

    params = GenerationParams(decoding_steps=(20, 10, 10, 10) if steps[1] != 1 else (4, 1, 1, 1), **speed)
    calls = []
    _, counted = _run(params, calls=calls)
    assert params.stage_steps == steps and counted == passes == planned_passes(params)
    assert calls == [(i, sum(steps)) for i in range(1, sum(steps) + 1)]


def test_turbo_preset_halves_the_forward_passes():
    from openmagnet.config import speed_settings
    from openmagnet.decoding import planned_passes

    turbo = GenerationParams(**speed_settings("turbo"))
    assert planned_passes(GenerationParams()) >= 2 * planned_passes(turbo)
    assert speed_settings("turbo", guidance_every=2)["guidance_every"] == 2  # a given value beats the preset
    assert speed_settings(None) == dict(speed=None, guidance_every=1, fine_step_share=1.0, confidence_stop=0.0)


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
def test_speed_settings_keep_fixed_frames_and_are_reproducible(arrangement):
    turbo = GenerationParams(decoding_steps=(6, 4, 4, 4), span_arrangement=arrangement, guidance_every=3,
                             fine_step_share=0.5, confidence_stop=0.5)
    prompt = torch.randint(0, 16, (2, 4, 7), generator=torch.Generator().manual_seed(0))
    runs = [_run(turbo, seed=s, prompt=prompt)[0] for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert torch.equal(runs[0][..., :7], prompt) and ((runs[0] >= 0) & (runs[0] < 16)).all()
    given = torch.randint(0, 16, (2, 4, 24), generator=torch.Generator().manual_seed(2))
    keep = torch.ones(24, dtype=torch.bool)
    keep[6:15] = False
    out, _ = _run(turbo, infill=(given, keep))
    kept = keep[:out.shape[-1]]
    assert torch.equal(out[..., kept], given[..., :out.shape[-1]][..., kept])


def test_confidence_stop_ends_a_confident_stage_early():
    """Peaked logits (scale 40): every sampled token is certain after the first step, so each stage stops at its
    second step; the progress still reaches the planned total."""
    params = GenerationParams(decoding_steps=(8, 6, 6, 6), span_arrangement="stride1", confidence_stop=0.9)
    calls = []
    codes, passes = _run(params, TableModel(scale=40.0), calls=calls)
    full, all_passes = _run(dataclasses.replace(params, confidence_stop=0.0), TableModel(scale=40.0))
    assert passes == 2 * 4 < all_passes == 2 * 26
    assert calls[-1] == (26, 26) and [t for _, t in calls] == [26] * len(calls)
    assert ((codes >= 0) & (codes < 16)).all()
    _, flat = _run(params, TableModel(scale=0.01))  # flat logits: nothing is confident, every step runs
    assert flat == all_passes


@pytest.mark.parametrize("field, value, message", [
    ("speed", "warp", "speed must be one of turbo (or None: the reference's decoding); got 'warp'"),
    ("guidance_every", 0, "guidance_every must be a whole number of steps from 1 (every step, the reference) to "
                          "1000; got 0"),
    ("fine_step_share", 0.0, "fine_step_share must be in (0, 1] (1 = every step for codebooks 1-3); got 0.0"),
    ("confidence_stop", 1.0, "confidence_stop must be in [0, 1) (0 = off); got 1.0"),
])
def test_speed_settings_are_checked(field, value, message):
    with pytest.raises(ValueError) as err:
        GenerationParams(**{field: value})
    assert str(err.value) == message


def test_guidance_reuse_needs_the_halves():
    with pytest.raises(ValueError, match=r"^guidance_every > 1 reuses the guidance: it needs a logits function"):
        generate_tokens(lambda codes, stage, coef: None, 1, 20, 4, 16, GenerationParams(guidance_every=2))
