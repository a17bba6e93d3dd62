"""What a training run learns about its EMA weights while it trains: the validation cross-entropy per
codebook on fixed held-out batches (keeping the best weights in best.pt), and audio samples.

Both run on the main process only, on a plain MagnetLM holding the EMA weights.
"""
from __future__ import annotations

import math
import typing as tp
from pathlib import Path

import torch

from ..api import MAGNeT
from ..audio import audio_write
from ..conditioners import TextConditioner
from ..config import TextConfig
from ..data.dataset import SegmentDataset, make_loader
from ..files import atomic_save
from ..lm import MagnetLM
from .objective import TrainingForward, masked_loss
from .runs import step_seed

# (codes [B, K, T], text states [B, S, d_text], text mask [B, S]) of one batch
Prepared = tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Validator:
    """Cross-entropy and perplexity per codebook on the first `batches` batches of `dataset` (fixed:
    prepared once by `prepare`), with masks drawn from fixed seeds; the weights with the lowest mean
    cross-entropy so far are written to `best_path`."""

    def __init__(self, dataset: SegmentDataset, batch_size: int, batches: int,
                 prepare: tp.Callable[[dict], Prepared], *, seed: int, precision: str, best_path: Path):
        self.dataset = dataset
        self.batch_size = batch_size
        self.batches = batches
        self.prepare = prepare
        self.seed = seed
        self.precision = precision
        self.best_path = best_path
        self.best = math.inf
        self._prepared: tp.Optional[tp.List[Prepared]] = None

    def prepared(self) -> tp.List[Prepared]:
        """The fixed validation batches, prepared on first use."""
        if self._prepared is None:
            loader = make_loader(self.dataset, self.batch_size, 0, 0, 1, num_workers=0)
            self._prepared = [self.prepare(batch) for _, batch in zip(range(self.batches), loader, strict=False)]
        return self._prepared

    @torch.no_grad()
    def __call__(self, lm: MagnetLM, step: int) -> dict:
        """The metrics row of `lm` (EMA weights, eval mode) at training step `step`; `best: True` when
        these weights were kept as the best."""
        model = TrainingForward(lm)
        row: dict = {"step": step}
        totals = []
        for stage in range(lm.cfg.n_q):
            loss_sum, count = 0.0, 0
            for i, (codes, states, mask) in enumerate(self.prepared()):
                generator = torch.Generator().manual_seed(step_seed(self.seed, "valid", i, stage))
                loss, n = masked_loss(model, codes, states, mask, stage, generator, lm.cfg, self.precision)
                loss_sum, count = loss_sum + float(loss) * n, count + n
            ce = loss_sum / max(count, 1)
            row[f"valid_ce_{stage}"], row[f"valid_ppl_{stage}"] = ce, math.exp(min(ce, 50.0))
            totals.append(ce)
        row["valid_ce"] = sum(totals) / len(totals)
        row["valid_ppl"] = math.exp(min(row["valid_ce"], 50.0))
        if row["valid_ce"] < self.best:
            self.best = row["valid_ce"]
            atomic_save({"best_state": {k: v.detach().cpu() for k, v in lm.state_dict().items()},
                         "step": step, "valid_ce": row["valid_ce"]}, self.best_path)
            row["best"] = True
        return row


class SampleWriter:
    """Audio for the first `count` descriptions of `dataset`, generated with given weights (the
    run's text encoder and codec) into `folder`/step_XXXXXXXX/ as NN.wav + NN.txt."""

    def __init__(self, folder: Path, dataset: SegmentDataset, text_cfg: TextConfig, conditioner: TextConditioner,
                 codec: tp.Any, *, steps: tp.Sequence[int], seed: int, name: str, count: int = 2):
        self.folder = folder
        self.dataset = dataset
        self.text_cfg = text_cfg
        self.conditioner = conditioner
        self.codec = codec
        self.steps = list(steps)
        self.seed = seed
        self.name = name
        self.count = count

    @torch.no_grad()
    def __call__(self, lm: MagnetLM, step: int) -> tp.List[Path]:
        model = MAGNeT(f"{self.name}@{step}", lm, self.text_cfg, self.codec,
                       conditioner=self.conditioner.with_projection(lm.condition_provider.output_proj))
        model.set_generation_params(decoding_steps=self.steps, span_arrangement="stride1")
        prompts = [self.dataset[i]["description"] for i in range(self.count)]
        generator = torch.Generator(device=lm.device).manual_seed(step_seed(self.seed, "samples"))
        wavs = model.generate(prompts, generator=generator)
        folder = self.folder / f"step_{step:08d}"
        paths = []
        for i, (prompt, wav) in enumerate(zip(prompts, wavs, strict=True)):
            paths.append(audio_write(folder / f"{i:02d}", wav.cpu(), model.sample_rate, strategy="peak"))
            (folder / f"{i:02d}.txt").write_text((prompt or "") + "\n")
        return paths
