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
