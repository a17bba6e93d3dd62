"""Generation modes as functions: text (and continuation), long (overlapping windows), loop and infill. Each takes
what it needs explicitly, in a `Run` (the LM, its text conditioner, the settings, the random generator, the
progress callback); none reads or changes a model's stored settings. request.run picks the mode of a request;
MAGNeT's generate* methods build a request.

Generation always uses classifier-free guidance: the batch is doubled into conditional rows and null rows (zero
condition, or the negative prompts' condition), as in the reference, also for unconditional generation.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import typing as tp
import warnings

import torch

from .config import GenerationParams
from .decoding import generate_tokens, mix_guidance, top_code_share
from .lm import MagnetLM, pad_cross_kv
from .runtime import TEXT_BUCKET

Progress = tp.Callable[[int, int], None]
Texts = tp.List[tp.Optional[str]]
COLLAPSE_SHARE = 0.3  # one code filling more of a stage than this is a collapse worth a warning
COLLAPSE_MIN_FRAMES = 25  # fewer sampled frames than this (0.5 s at 50 Hz) say nothing about a collapse


# ------------------------------------------------------------------------------------------ the guided model
class GuidedLogits:
    """The model as decoding sees it (a decoding.GuidedFn): runs the [conditional; null] batch and mixes the
    stage's logits as uncond + (cond - uncond) * coef, in float32; or the halves apart, for guidance reuse.
    The cross-attention keys/values of the text never change during a generation, so they are computed once
    here; the null rows' condition is all zeros, so their cross-attention (exactly 0) is skipped. `passes`
    counts forward-pass equivalents (one pass of the B conditional rows; a guided step is 2)."""

    def __init__(self, lm: MagnetLM, cond: torch.Tensor, batch_size: int):
        self.lm, self.batch_size, self.passes = lm, batch_size, 0
        null_is_zero = bool(torch.count_nonzero(cond[batch_size:]) == 0)
        self.cross_kv = lm.cross_kv(cond[:batch_size] if null_is_zero else cond)
        if lm.compiled_layers is not None:  # fixed shapes: the text padded to a bucket (masked)
            self.cross_kv = pad_cross_kv(self.cross_kv, TEXT_BUCKET)
        self.cond_kv = self.cross_kv if null_is_zero else [tuple(t[:batch_size] if t.shape[0] > 1 else t for t in kv)
                                                           for kv in self.cross_kv]

    def pair(self, codes: torch.Tensor, stage: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """(conditional, null) logits [B, T, N] of the stage, float32."""
        self.passes += 2
        logits = self.lm.stage_logits(torch.cat([codes, codes], dim=0), None, stage, self.cross_kv).float()
        cond_logits, uncond_logits = logits.split(self.batch_size, dim=0)
        return cond_logits, uncond_logits

    def cond(self, codes: torch.Tensor, stage: int) -> torch.Tensor:
        """The conditional rows' logits [B, T, N] alone, float32."""
        self.passes += 1
        return self.lm.stage_logits(codes, None, stage, self.cond_kv).float()

    def __call__(self, codes: torch.Tensor, stage: int, coef: float) -> torch.Tensor:
        return mix_guidance(*self.pair(codes, stage), coef)


def guided_logits_fn(lm: MagnetLM, cond: torch.Tensor, batch_size: int) -> GuidedLogits:
    """logits_fn for decoding (see `GuidedLogits`)."""
    return GuidedLogits(lm, cond, batch_size)


@dataclasses.dataclass
class Run:
    """What one generation needs, given explicitly: the LM, its text conditioner (`cfg_condition`), the settings,
    the random generator (on the LM's device, or None) and the progress callback (step, total) or None.
    `passes` counts the forward-pass equivalents run (one pass of a batch's conditional rows; a guided step 2)."""
    lm: MagnetLM
    conditioner: tp.Any
    params: GenerationParams
    generator: tp.Optional[torch.Generator] = None
    progress: tp.Optional[Progress] = None
    passes: int = 0

    def sample(self, descriptions: Texts, negatives: tp.Optional[Texts], frames: int,
               prompt: tp.Optional[torch.Tensor] = None,
               infill: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None,
               progress: tp.Optional[Progress] = None) -> torch.Tensor:
        """One window of `frames` frames: codes [B, K, T] (T trimmed to whole spans for 'nonoverlap'), with the
        first frames fixed to `prompt` [B, K, Tp], or the frames marked in `infill`'s keep fixed to its codes.
        `progress`: this window's callback (default the run's)."""
        cfg = self.lm.cfg
        with torch.inference_mode():
            cond = self.conditioner.cfg_condition(descriptions, negatives)
            logits_fn = guided_logits_fn(self.lm, cond, len(descriptions))
            try:
                return generate_tokens(logits_fn, len(descriptions), frames, cfg.n_q, cfg.card, self.params,
                                       span_len=cfg.span_len, prompt=prompt, device=self.lm.device,
                                       generator=self.generator, callback=progress or self.progress, infill=infill)
            finally:
                self.passes += logits_fn.passes


# ------------------------------------------------------------------------------------------ the modes
def text(run: Run, descriptions: Texts, negatives: tp.Optional[Texts], frames: int,
         prompt: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """`frames` frames (at most one window) for the descriptions, continuing `prompt` [B, K, Tp] when given;
    warns once when the sampled frames collapsed onto one code."""
    tokens = run.sample(descriptions, negatives, frames, prompt=prompt)
    given = 0 if prompt is None else prompt.shape[-1]
    warn_if_collapsed(tokens[..., given:], params=run.params)
    return tokens


def extend_plan(window: int, stride_frames: int, total: int) -> tp.List[tp.Tuple[int, int]]:
    """[(prompt frames, window frames)] of the windows that make `total` frames: the first window is full and
    unprompted, each next one is prompted with the last (window - stride) frames made so far."""
    overlap = window - max(1, stride_frames)
    plan, made = [(0, window)], window
    while made < total:
        length = min(window, overlap + total - made)
        plan.append((overlap, length))
        made += length - overlap
    return plan


def long(run: Run, descriptions: Texts, negatives: tp.Optional[Texts], total: int, window: int, stride_frames: int,
         prompt: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """`total` frames in overlapping windows (see `extend_plan`); a continuation prompt starts the first. A window
    that 'nonoverlap' trims to whole spans adds a little less; the loop runs until `total`. Progress counts the
    steps of every window planned (a window added by that trimming adds its steps)."""
    plan = extend_plan(window, stride_frames, total)
    overlap = plan[1][0]
    steps = run.params.total_steps
    made: tp.Optional[torch.Tensor] = None
    index = 0
    while made is None or made.shape[-1] < total:
        length = window if made is None else min(window, max(overlap + 3, overlap + total - made.shape[-1]))
        start = prompt if made is None else made[..., made.shape[-1] - overlap:]
        report = None
        if run.progress is not None:
            def report(step: int, _total: int, index: int = index) -> None:
                run.progress(index * steps + step, max(len(plan), index + 1) * steps)
        chunk = run.sample(descriptions, negatives, length, prompt=start, progress=report)
        made = chunk if made is None else torch.cat([made, chunk[..., overlap:]], dim=-1)
        index += 1
    made = made[..., :total]
    given = 0 if prompt is None else prompt.shape[-1]
    warn_if_collapsed(made[..., given:], params=run.params)  # once for the whole clip, not once per window
    return made


def loop(run: Run, descriptions: Texts, negatives: tp.Optional[Texts], frames: int, seam: float,
         frame_rate: float) -> torch.Tensor:
    """A clip of `frames` frames that repeats without a seam: generated, then rotated so that its end and start
    meet in the middle, `seam` seconds there (whole spans) regenerated with both sides as context, rotated back."""
    tokens = text(run, descriptions, negatives, frames)
    T, span = tokens.shape[-1], run.lm.cfg.span_len
    if isinstance(seam, bool) or not isinstance(seam, (int, float)) or not 0 < seam * frame_rate < T - span:
        raise ValueError(f"loop_seam must be between one frame and the clip's length ({T / frame_rate:g} s), "
                         f"got {seam!r}")
    shift = (T // 2) // span * span
    half = max(span, int(round(seam * frame_rate / 2)) // span * span)
    keep = torch.ones(T, dtype=torch.bool)
    keep[max(0, shift - half):min(T, shift + half)] = False
    rotated = torch.roll(tokens, shifts=shift, dims=-1)  # frame 0 now at `shift`, frame T-1 just before it
    closed = run.sample(descriptions, negatives, T, infill=(rotated, keep), progress=_silent)
    return torch.roll(closed, shifts=-shift, dims=-1)


def _silent(step: int, total: int) -> None:
    """The seam of a loop reports no progress (as before: the clip's steps are the bar)."""


def infill(run: Run, descriptions: Texts, negatives: tp.Optional[Texts], given: torch.Tensor,
           keep: torch.Tensor) -> torch.Tensor:
    """Codes [B, K, T] of `given` with the frames not in `keep` [T] regenerated, every kept frame exactly the
    input's (context on both sides). 'nonoverlap' trims to whole spans: the tail keeps its codes."""
    keep = keep[:given.shape[-1]]
    if keep.shape[0] < given.shape[-1]:
        keep = torch.cat([keep, torch.ones(given.shape[-1] - keep.shape[0], dtype=torch.bool)])
    tokens = run.sample(descriptions, negatives, given.shape[-1], infill=(given, keep))
    warn_if_collapsed(tokens[..., ~keep[:tokens.shape[-1]].to(tokens.device)], params=run.params)
    if tokens.shape[-1] < given.shape[-1]:
        tokens = torch.cat([tokens, given[..., tokens.shape[-1]:]], dim=-1)
    return tokens


def infill_keep(regions: tp.Any, seconds: float, frame_rate: float, span_len: int, frames: int) -> torch.Tensor:
    """Boolean [frames]: True for the frames kept, False for those of the regions (start_s, end_s), each widened
    to whole spans of span_len frames. One-line errors for regions that are empty, outside the audio, overlap
    or cover everything."""
    if not isinstance(regions, (list, tuple)) or not regions:
        raise ValueError("regions must be a non-empty list of (start_s, end_s) pairs, e.g. [(3.0, 5.5)]")
    keep = torch.ones(frames, dtype=torch.bool)
    spans = []
    for i, region in enumerate(regions):
        if not isinstance(region, (list, tuple)) or len(region) != 2 or \
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in region):
            raise ValueError(f"regions[{i}] must be a (start_s, end_s) pair of numbers, got {region!r}")
        start, end = float(region[0]), float(region[1])
        if end <= start:
            raise ValueError(f"region {i} ({start:g}-{end:g} s) is empty: its end must come after its start")
        if start < 0 or end > seconds + 1e-9:
            raise ValueError(f"region {i} ({start:g}-{end:g} s) is outside the audio (0-{seconds:.2f} s)")
        spans.append((start, end, i))
    spans.sort()
    for (s0, e0, i0), (s1, e1, i1) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise ValueError(f"regions {i0} ({s0:g}-{e0:g} s) and {i1} ({s1:g}-{e1:g} s) overlap: merge them")
    for start, end, _ in spans:
        first = int(math.floor(start * frame_rate)) // span_len * span_len
        last = min(frames, -(-int(math.ceil(end * frame_rate)) // span_len) * span_len)
        keep[first:last] = False
    if not bool(keep.any()):
        raise ValueError("the regions cover the whole audio: leave some of it as context (or use generate)")
    return keep


# ------------------------------------------------------------------------------------------ collapse
class SamplingCollapsed(RuntimeWarning):
    """One code filled more than the threshold of some stage's frames in a generated clip: the sampling collapsed
    onto few codes and the audio drones. `shares` {codebook: share of its commonest code, worst clip}; the remedies
    named are those not already in force under `params` (the settings the generation used). str() says them in
    the API's words; `describe(flags)` in a face's (the command line passes its flags)."""

    def __init__(self, shares: tp.Dict[int, float], threshold: float, params: tp.Optional[GenerationParams] = None):
        self.shares, self.threshold, self.params = dict(shares), threshold, params
        super().__init__(self.describe())

    def remedies(self) -> tp.List[tp.Tuple[str, float, float]]:
        """[(setting, value to try, value now)], two at most and none already in force: openmagnet's re-masking
        noise when it is off, a weaker guidance (half the max CFG, while above 1), a higher temperature (x1.5),
        more re-masking noise (x2). On the demo model ("slow ambient pad", seeds 1 and 11, its stored CFG 3,
        temperature 3 and noise 3: codebook 0's commonest code 62-66%), CFG 1.5 brought it to 30-34%,
        temperature 4.5 to 27-36%, noise 6 to 42-44%."""
        p = self.params or GenerationParams()
        found = [("remask_noise", 3.0, 0.0)] if p.remask_noise == 0 else []
        if p.max_cfg_coef > 1:
            found.append(("max_cfg_coef", max(1.0, round(p.max_cfg_coef / 2, 2)), p.max_cfg_coef))
        if p.use_sampling and p.temperature > 0:
            found.append(("temperature", round(p.temperature * 1.5, 2), p.temperature))
        if p.remask_noise > 0:
            found.append(("remask_noise", 2 * p.remask_noise, p.remask_noise))
        return found[:2]

    def describe(self, flags: tp.Optional[tp.Mapping[str, str]] = None) -> str:
        """The warning's sentence; `flags` maps set_generation_params() names to a face's (e.g. '--remask-noise')."""
        worst = ", ".join(f"codebook {k}: {share:.0%}" for k, share in self.shares.items())
        tries = " or ".join((f"{flags[name]} {value:g}" if flags else f"{name}={value:g}") + f" (now {now:g})"
                            for name, value, now in self.remedies())
        return (f"the sampling collapsed: one code fills more than {self.threshold:.0%} of the frames ({worst}); "
                f"try {tries}" + ("" if flags else " with set_generation_params"))


def warn_if_collapsed(tokens: torch.Tensor, threshold: float = COLLAPSE_SHARE,
                      params: tp.Optional[GenerationParams] = None) -> tp.List[int]:
    """Warn (SamplingCollapsed, a RuntimeWarning) when, in some generated clip, one code fills more than
    `threshold` of a stage's frames: the sampling collapsed onto few codes and the audio drones. tokens [B, K, T]:
    the sampled frames only (not a prompt's or the kept frames of an infill, which are the input's), of a whole
    generation (one warning, however many windows made it). `params`: the settings it used, so that the warning
    names a remedy not already in force. Returns the collapsed stages; none for fewer than COLLAPSE_MIN_FRAMES
    frames."""
    if tokens.shape[-1] < COLLAPSE_MIN_FRAMES:
        return []
    share = top_code_share(tokens).amax(0)  # [K], the worst clip per stage
    stages = [k for k, s in enumerate(share.tolist()) if s > threshold]
    if stages:
        warnings.warn(SamplingCollapsed({k: float(share[k]) for k in stages}, threshold, params),
                      stacklevel=_outside_level())
    return stages


def _outside_level() -> int:
    """warnings.warn's stacklevel of the first caller outside openmagnet (the user's line, however deep the
    generation's path inside the package)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
