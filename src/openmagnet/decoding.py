"""MAGNeT's iterative masked decoding (SPEC §3; audiocraft MagnetLMModel._generate_stage).

Codebooks are decoded one after the other (stage 0..3). A stage starts fully masked and runs N
steps; at step i (s = i / (N - 1)):
    mask rate      p = cos(pi/2 * s)                      -> how many spans / tokens to re-mask
    CFG coef       c = p * max_cfg + (1 - p) * min_cfg     (annealed with the mask rate)
    temperature    t = temperature * (N - 1 - i) / N       (linear to 0, floored at 0.01)
the least confident spans are re-masked, the model predicts every masked token, and confidence
scores of the tokens just sampled decide what may be re-masked next. Fixed frames (a `keep` mask: a
prefix for a continuation, any set for infill) are restored before every forward pass and never re-masked.

Two span arrangements: 'nonoverlap' (fixed 3-frame chunks; T is trimmed to a multiple of 3,
so 500 frames become 498) and 'stride1' (any 3-frame window, chosen by a binary search over the
number of spans, one batch item at a time).

The model enters as `logits_fn(codes [B, K, T], stage, cfg_coef) -> guided logits [B, T, N]`, so
this module never sees the transformer, the text or the batch doubling of guidance.

Exactness: the float32 operations, their order and the tensor shapes of the score/selection steps
follow the reference, so greedy decoding (argmax, no RNG) reproduces audiocraft's tokens exactly,
including how `topk` / `argsort` order tied scores.

Decoding that does less work (GenerationParams, all off by default; `speed='turbo'` sets a preset):
  guidance reuse    guidance_every = k > 1: the null rows run only every k-th step of a stage; in
                    between the guided logits are cond + (coef - 1) * (cond - null) with the difference
                    of the last step that ran them (it changes slowly across steps: LazyMAR's condition
                    cache, arXiv 2503.12450); and no null rows at all where the coefficient is 1 (the
                    last step of every stage with min_cfg_coef 1), where guidance is the cond logits.
                    Needs a `GuidedFn` (cond() and pair()) instead of a plain LogitsFn.
  fewer fine steps  fine_step_share < 1: codebooks 1-3 (local context, low entropy) run that share of
                    their steps on the same cosine schedule.
  confidence stop   confidence_stop = c > 0: a sampled unit whose probability reaches c is never re-masked,
                    and a stage ends as soon as none is below c (adaptive steps, in the spirit of
                    entropy-bounded unmasking, arXiv 2505.24857).
A forward-pass equivalent is one pass of the B conditional rows (the reference does 2 per step).
"""
from __future__ import annotations

import math
import typing as tp

import torch

from .config import GenerationParams
from .sampling import select_tokens

LogitsFn = tp.Callable[[torch.Tensor, int, float], torch.Tensor]
ProgressFn = tp.Callable[[int, int], None]
DONT_REMASK = -1e4  # score of frozen units: never among the least confident
COEF_ONE = 1e-3  # a guidance coefficient this close to 1 needs no null rows (with guidance reuse on)


class GuidedFn(tp.Protocol):
    """A LogitsFn that also gives the two halves of guidance apart (what guidance reuse needs)."""

    def __call__(self, codes: torch.Tensor, stage: int, coef: float) -> torch.Tensor: ...

    def cond(self, codes: torch.Tensor, stage: int) -> torch.Tensor:
        """Conditional logits [B, T, N] only (one forward-pass equivalent)."""

    def pair(self, codes: torch.Tensor, stage: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """(conditional, null) logits, each [B, T, N] (two forward-pass equivalents)."""


def mask_rate(schedule: torch.Tensor, step: int) -> torch.Tensor:
    """Cosine schedule value (float32 0-d tensor). At the last step it is about -4.4e-8, not 0."""
    return torch.cos(schedule[step] * math.pi * 0.5)


def num_to_mask(rate: torch.Tensor, units: int) -> int:
    """Spans (nonoverlap) or tokens (stride1) to re-mask: floor(rate * units), at least 1."""
    return max(int((rate * units).item()), 1)


def cfg_coef(rate: torch.Tensor, max_coef: float, min_coef: float) -> float:
    p = float(rate)
    return p * max_coef + (1 - p) * min_coef


def temperature(initial: float, step: int, steps: int) -> float:
    """Linearly annealed temperature for this step, floored at 0.01."""
    return max(initial * ((steps - 1 - step) / steps), 1e-2)


def spans_mask(starts: torch.Tensor, seq_len: int, span_len: int) -> torch.Tensor:
    """Boolean [1, 1, T]: each start s covers s .. s + span_len - 1 (cut at T)."""
    first = torch.zeros((1, 1, seq_len), dtype=torch.bool, device=starts.device)
    first[:, :, starts] = True
    mask = first.clone()
    for shift in range(1, span_len):
        mask[..., shift:] |= first[..., :-shift]
    return mask


def least_probable_spans(scores: torch.Tensor, num_masked: int, span_len: int) -> torch.Tensor:
    """stride1 masking for one batch item: scores [1, 1, T] (-log p per token) -> mask [1, 1, T].

    Spans are ranked by the sum of their tokens' scores, and a binary search looks for the number
    u of top spans whose union covers `num_masked` tokens. Like the reference: at least one span,
    and the mask returned is the last one built, so the count can miss the target slightly.
    Ties (e.g. on the first step, where all scores are 0) are ordered by `torch.argsort`; on that
    first step every position is already masked, so their order cannot change the result.
    """
    T = scores.shape[-1]
    span_scores = scores.unfold(2, span_len, 1).sum(dim=-1)  # [1, 1, T - span_len + 1]
    order = torch.argsort(span_scores[0, 0], descending=True)
    target = max(num_masked, span_len)
    low, high = target // span_len, target - span_len + 1
    mid = round(0.5 * (low + high))
    if mid in (low, high):
        return spans_mask(order[:mid], T, span_len)
    while low < mid < high:
        mask = spans_mask(order[:mid], T, span_len)
        if mask.sum() > target:
            high = mid
        else:
            low = mid
        mid = round(0.5 * (low + high))
    return mask


def noisy_scores(scores: torch.Tensor, scale: float, generator: tp.Optional[torch.Generator]) -> torch.Tensor:
    """MaskGIT's choice temperature: re-masking scores (-log p, higher = re-masked first) minus `scale` times
    Gumbel noise, i.e. the confidence log p + scale * g ranks the tokens; frozen units stay frozen."""
    uniform = torch.rand(scores.shape, generator=generator, device=scores.device).clamp_(1e-20, 1.0)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.where(scores == DONT_REMASK, scores, scores - scale * gumbel)


def mix_guidance(cond: torch.Tensor, uncond: torch.Tensor, coef: float) -> torch.Tensor:
    """Classifier-free guidance, in the reference's order of operations: uncond + (cond - uncond) * coef."""
    return uncond + (cond - uncond) * coef


def refresh_guidance(step: int, every: int) -> bool:
    """Guidance reuse: do the null rows run at this step of a stage (every `every`-th step, from the first)?"""
    return step % every == 0


def guided_logits(fn: GuidedFn, codes: torch.Tensor, stage: int, coef: float, step: int, every: int,
                  diff: tp.Optional[torch.Tensor]) -> tp.Tuple[torch.Tensor, tp.Optional[torch.Tensor]]:
    """(guided logits [B, T, N], the cond - null difference to reuse) for one step with guidance reuse:
    the cond rows alone where the coefficient is 1; both halves at a refresh step (or when no difference is
    known yet), mixed as the reference does; otherwise the cond rows plus (coef - 1) times the last difference."""
    if abs(coef - 1.0) < COEF_ONE:
        return fn.cond(codes, stage), diff
    if diff is None or refresh_guidance(step, every):
        cond, uncond = fn.pair(codes, stage)
        return mix_guidance(cond, uncond, coef), cond - uncond
    return fn.cond(codes, stage) + diff * (coef - 1.0), diff


def planned_passes(params: GenerationParams, n_q: int = 4) -> int:
    """Forward-pass equivalents a generation runs with `params` (before any confidence stop): 2 per step in the
    reference's decoding; with guidance reuse 1 per step plus 1 at each step that runs the null rows."""
    total = 0
    for steps in params.stage_steps[:n_q]:
        schedule = torch.linspace(0, 1, steps)
        if params.guidance_every == 1:
            total += 2 * steps
            continue
        known = False
        for step in range(steps):
            coef = cfg_coef(mask_rate(schedule, step), params.max_cfg_coef, params.min_cfg_coef)
            fresh = abs(coef - 1.0) >= COEF_ONE and (not known or refresh_guidance(step, params.guidance_every))
            known = known or fresh
            total += 2 if fresh else 1
    return total


def capped_count(num: int, unconfident: tp.Optional[int]) -> int:
    """Confidence stop: at most the units still below the threshold are re-masked (None: no cap)."""
    return num if unconfident is None else min(num, unconfident)


def prefix_keep(seq_len: int, prompt_len: int) -> torch.Tensor:
    """Boolean [T]: a continuation's fixed frames, the first prompt_len."""
    keep = torch.zeros(seq_len, dtype=torch.bool)
    keep[:prompt_len] = True
    return keep


def select_remask(scores: torch.Tensor, num: int, span_len: int, chunked: bool) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, 1, T] of the tokens to re-mask, mask [B, 1, units] of the units chosen) for the `num` least
    confident units of scores [B, 1, units]: chunks of span_len frames (nonoverlap), spans of any start
    (stride1, counted in tokens) or tokens."""
    B, device = scores.shape[0], scores.device
    if chunked:
        chunk_mask = torch.zeros(scores.shape, dtype=torch.bool, device=device)
        chunk_mask = chunk_mask.scatter(2, scores.topk(num, dim=-1).indices, True)
        return chunk_mask.repeat_interleave(span_len, dim=-1), chunk_mask
    if span_len > 1:
        remask = torch.cat([least_probable_spans(scores[[b]], num, span_len) for b in range(B)], dim=0)
        return remask, remask
    remask = torch.zeros(scores.shape, dtype=torch.bool, device=device)
    remask = remask.scatter(2, scores.topk(num, dim=-1).indices, True)
    return remask, remask


class Stage(tp.NamedTuple):
    """What one stage's re-masking works on: `keep` [T] the fixed frames, `units` how many units (chunks for
    nonoverlap, else frames) may be re-masked, `scores` [B, 1, units] their first re-masking scores (fixed
    units at DONT_REMASK), `fixed` [B, 1, n_fixed] the fixed frames' codes of the stage."""
    keep: torch.Tensor
    chunked: bool
    units: int
    scores: torch.Tensor
    fixed: torch.Tensor


def start_stage(codes: torch.Tensor, stage: int, keep: torch.Tensor, span_len: int, chunked: bool) -> Stage:
    """The re-masking state at the start of a stage; codes [B, K, T] (already trimmed for nonoverlap) hold the
    fixed frames' codes. A 'nonoverlap' chunk is frozen when all its frames are fixed."""
    B, _, T = codes.shape
    if chunked:
        frozen = keep.reshape(T // span_len, span_len).all(-1)
    else:
        frozen = keep
    scores = torch.zeros((B, 1, frozen.shape[0]), dtype=torch.float32, device=codes.device)
    scores[..., frozen] = DONT_REMASK
    units = frozen.shape[0] - int(frozen.sum())
    return Stage(keep, chunked, units, scores, codes[:, stage:stage + 1, :][..., keep])


def remask(stage_codes: torch.Tensor, scores: torch.Tensor, num: int, span_len: int, state: Stage,
           mask_id: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """(stage codes [B, 1, T] with the `num` least confident units masked and the fixed frames restored, the
    mask [B, 1, units] of the units chosen)."""
    tokens, unit_mask = select_remask(scores, num, span_len, state.chunked)
    stage_codes = stage_codes.masked_fill(tokens, mask_id)
    if state.fixed.shape[-1]:
        stage_codes[..., state.keep] = state.fixed
    return stage_codes, unit_mask


def step_logits(logits_fn: tp.Union[LogitsFn, GuidedFn], codes: torch.Tensor, stage: int, coef: float, step: int,
                params: GenerationParams,
                diff: tp.Optional[torch.Tensor]) -> tp.Tuple[torch.Tensor, tp.Optional[torch.Tensor]]:
    """(guided logits [B, 1, T, N], the guidance difference to reuse) for one step."""
    if params.guidance_every > 1:
        logits, diff = guided_logits(logits_fn, codes, stage, coef, step, params.guidance_every, diff)
    else:
        logits = logits_fn(codes, stage, coef)
    return logits.unsqueeze(1), diff


def rescore(token_probs: torch.Tensor, masked: torch.Tensor, unit_mask: torch.Tensor, chunked: bool,
            noise: float) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(re-masking scores [B, 1, units], each unit's confidence, the units just sampled) from the probabilities
    [B, 1, T] of the tokens just sampled: -log p per token, or per chunk 1 - its best token's p (-log of it with
    re-masking noise, so that the noise has one scale for both); units not sampled this step stay frozen."""
    if chunked:
        B, _, T = token_probs.shape
        best = torch.max(token_probs.reshape(B, 1, unit_mask.shape[-1], -1), dim=-1)[0]
        scores = (1 - best) if noise == 0 else -torch.log(best)
        return scores.masked_fill(~unit_mask, DONT_REMASK), best, unit_mask
    return (-torch.log(token_probs)).masked_fill(~masked, DONT_REMASK), token_probs, masked


def decode_stage(logits_fn: tp.Union[LogitsFn, GuidedFn], codes: torch.Tensor, stage: int, steps: int,
                 params: GenerationParams, card: int, span_len: int, keep: torch.Tensor,
                 generator: tp.Optional[torch.Generator] = None,
                 on_step: tp.Optional[tp.Callable[[], None]] = None) -> torch.Tensor:
    """Decode codebook `stage` of codes [B, K, T] in place; returns codes (trimmed for nonoverlap).

    keep [T] (boolean) marks the fixed frames, whose codes in `codes` are given: a prefix for a continuation
    (prefix_keep), any set for infill, none for text alone. They are restored before every forward pass and never
    counted among the units to re-mask. With confidence_stop the stage may end before `steps` (see the module
    docstring)."""
    chunked = span_len > 1 and params.span_arrangement == "nonoverlap"
    T = codes.shape[-1] // span_len * span_len if chunked else codes.shape[-1]
    codes, keep = codes[..., :T], keep.to(codes.device)[:T]
    state = start_stage(codes, stage, keep, span_len, chunked)
    scores, mask_id = state.scores, card
    stage_codes = torch.full((codes.shape[0], 1, T), mask_id, dtype=torch.long, device=codes.device)
    schedule = torch.linspace(0, 1, steps, device=codes.device)
    diff, unconfident = None, None
    for step in range(steps):
        rate = mask_rate(schedule, step)
        num = capped_count(num_to_mask(rate, state.units), unconfident)
        if num == 0:  # confidence stop: every unit is confident
            break
        if params.remask_noise > 0 and step > 0:
            scores = noisy_scores(scores, params.remask_noise * float(rate), generator)
        stage_codes, unit_mask = remask(stage_codes, scores, num, span_len, state, mask_id)
        codes[:, [stage], :] = stage_codes
        coef = cfg_coef(rate, params.max_cfg_coef, params.min_cfg_coef)
        logits, diff = step_logits(logits_fn, codes, stage, coef, step, params, diff)
        probs = torch.softmax(logits / temperature(params.temperature, step, steps), dim=-1)
        tokens = select_tokens(logits, probs, params.use_sampling, params.top_k, params.top_p, generator)
        masked = stage_codes == mask_id
        stage_codes = torch.where(masked, tokens[..., 0], stage_codes)
        codes[:, [stage], :] = stage_codes
        token_probs = torch.gather(probs, 3, tokens)[..., 0]  # [B, 1, T]
        scores, best, unit_mask = rescore(token_probs, masked, unit_mask, chunked, params.remask_noise)
        if params.confidence_stop > 0:
            unconfident = int(((best < params.confidence_stop) & unit_mask).sum(-1).max())
        if on_step is not None:
            on_step()
    return codes


def generate_tokens(logits_fn: tp.Union[LogitsFn, GuidedFn], batch_size: int, seq_len: int, n_q: int, card: int,
                    params: GenerationParams, span_len: int = 3, prompt: tp.Optional[torch.Tensor] = None,
                    device: tp.Union[str, torch.device] = "cpu", generator: tp.Optional[torch.Generator] = None,
                    callback: tp.Optional[ProgressFn] = None,
                    infill: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Run all stages. Returns codes [B, K, T'] (T' = T, or T trimmed to a multiple of span_len
    for 'nonoverlap'). `callback(step, total)` is called after every decoding step.
    prompt [B, K, Tp]: fixed first frames (continuation). infill (codes [B, K, T], keep [T] boolean): the codes
    of the frames marked in keep are fixed and every other frame is generated, with context on both sides."""
    if params.guidance_every > 1 and not (hasattr(logits_fn, "cond") and hasattr(logits_fn, "pair")):
        raise ValueError("guidance_every > 1 reuses the guidance: it needs a logits function with cond() and pair() "
                         "(a GuidedFn, e.g. api.GuidedLogits), not a plain function")
    codes = torch.full((batch_size, n_q, seq_len), card, dtype=torch.long, device=device)
    keep = prefix_keep(seq_len, 0).to(device)
    if prompt is not None and infill is not None:
        raise ValueError("give a prompt (continuation) or infill codes, not both")
    if prompt is not None:
        if prompt.shape[-1] >= seq_len:
            raise ValueError(f"the prompt has {prompt.shape[-1]} frames but the model generates {seq_len}: "
                             f"use a shorter prompt")
        codes[..., :prompt.shape[-1]] = prompt
        keep = prefix_keep(seq_len, prompt.shape[-1]).to(device)
    if infill is not None:
        given, keep = infill
        if given.shape != codes.shape or keep.shape != (seq_len,):
            raise ValueError(f"infill codes must be {tuple(codes.shape)} with a keep mask of {seq_len} frames, got "
                             f"{tuple(given.shape)} and {tuple(keep.shape)}")
        if bool(keep.all()):
            raise ValueError("every frame is kept: give at least one frame to generate")
        keep = keep.to(device=device, dtype=torch.bool)
        codes[..., keep] = given.to(device)[..., keep]
    total = params.total_steps
    done = 0

    def on_step():
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total)

    planned = 0
    for stage, steps in enumerate(params.stage_steps[:n_q]):
        codes = decode_stage(logits_fn, codes, stage, steps, params, card, span_len, keep, generator, on_step)
        planned += steps
        if done < planned:  # a confidence stop skipped steps: the progress jumps over them
            done = planned - 1
            on_step()
        keep = keep[:codes.shape[-1]]
    return codes


def top_code_share(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, K, T] -> [B, K]: the share of the T frames filled by the most frequent code of each
    stage (1 / T for all-distinct codes; 1 when one code fills the stage: the sampling collapsed)."""
    counts = torch.zeros(*tokens.shape[:2], int(tokens.max()) + 1, device=tokens.device)  # [B, K, N]
    counts.scatter_add_(-1, tokens.long(), torch.ones_like(tokens, dtype=counts.dtype))
    return counts.amax(-1) / tokens.shape[-1]
