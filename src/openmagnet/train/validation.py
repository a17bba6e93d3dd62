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
from .faults import fault_pause
from .objective import TrainingForward, masked_loss
from .runs import step_seed

Text = tp.Tuple[torch.Tensor, torch.Tensor]  # text states [B, S, d_text], text mask [B, S]
TEXTS = ("", "shuffled_", "null_")  # the true descriptions, another item's, none (the CFG null condition)


class Validator:
    """Cross-entropy and perplexity per codebook on the first `batches` batches of `dataset` (fixed:
    prepared once), with masks drawn from fixed seeds; the weights with the lowest mean cross-entropy
    so far are written to `best_path`.

    Does the model use its text? The same frames and masks are also scored with each item given
    another item's description (`valid_shuffled_ce*`: the validation descriptions rotated by one) and
    with no description (`valid_null_ce*`), next to the codes' unigram entropy (`valid_unigram_*`, nats:
    the cross-entropy of a model that knows only how often each code occurs)."""

    def __init__(self, dataset: SegmentDataset, batch_size: int, batches: int,
                 codes: tp.Callable[[dict], torch.Tensor], text: tp.Callable[[tp.List[tp.Optional[str]]], Text], *,
                 seed: int, precision: str, best_path: Path):
        self.dataset = dataset
        self.batch_size = batch_size
        self.batches = batches
        self.codes = codes
        self.text = text
        self.seed = seed
        self.precision = precision
        self.best_path = best_path
        self.best = math.inf
        self._prepared: tp.Optional[tp.List[tp.Dict[str, tp.Any]]] = None

    def prepared(self) -> tp.List[tp.Dict[str, tp.Any]]:
        """The fixed validation batches, prepared on first use: {'codes': [B, K, T], '': true text,
        'shuffled_': another item's text, 'null_': no text}."""
        if self._prepared is None:
            loader = make_loader(self.dataset, self.batch_size, 0, 0, 1, num_workers=0)
            prepared, descriptions = [], []
            for _, batch in zip(range(self.batches), loader, strict=False):
                batch_descriptions = list(batch["description"])
                text = self.text(batch_descriptions)
                prepared.append({"codes": self.codes(batch), "": text})
                descriptions.append(batch_descriptions)
            rotated = [d for batch in descriptions for d in batch]
            rotated = rotated[1:] + rotated[:1]
            for item, batch_descriptions in zip(prepared, descriptions, strict=True):
                n = len(batch_descriptions)
                item["shuffled_"] = self.text(rotated[:n])
                item["null_"] = self.text([None] * n)
                rotated = rotated[n:]
            self._prepared = prepared
        return self._prepared

    @torch.no_grad()
    def __call__(self, lm: MagnetLM, step: int) -> dict:
        """The metrics row of `lm` (EMA weights, eval mode) at training step `step`; `best: True` when
        these weights were kept as the best (by the true-text cross-entropy)."""
        model = TrainingForward(lm)
        row: dict = {"step": step}
        for variant in TEXTS:
            totals = []
            for stage in range(lm.cfg.n_q):
                loss_sum, count = 0.0, 0
                for i, item in enumerate(self.prepared()):
                    generator = torch.Generator().manual_seed(step_seed(self.seed, "valid", i, stage))
                    states, mask = item[variant]
                    loss, n = masked_loss(model, item["codes"], states, mask, stage, generator, lm.cfg,
                                          self.precision)
                    loss_sum, count = loss_sum + float(loss) * n, count + n
                ce = loss_sum / max(count, 1)
                row[f"valid_{variant}ce_{stage}"] = ce
                if not variant:
                    row[f"valid_ppl_{stage}"] = math.exp(min(ce, 50.0))
                totals.append(ce)
            row[f"valid_{variant}ce"] = sum(totals) / len(totals)
        row["valid_ppl"] = math.exp(min(row["valid_ce"], 50.0))
        row.update(unigram_entropy(torch.cat([item["codes"] for item in self.prepared()]), lm.cfg.card))
        fault_pause("validation")  # test-only (faults.py): computed, nothing written yet
        if row["valid_ce"] < self.best:
            self.best = row["valid_ce"]
            atomic_save({"best_state": {k: v.detach().cpu() for k, v in lm.state_dict().items()},
                         "step": step, "valid_ce": row["valid_ce"]}, self.best_path)
            row["best"] = True
        return row


def unigram_entropy(codes: torch.Tensor, card: int) -> dict:
    """codes [B, K, T] -> {'valid_unigram_k': entropy of codebook k's code frequencies (nats),
    'valid_unigram': their mean}."""
    row = {}
    for k in range(codes.shape[1]):
        p = torch.bincount(codes[:, k].reshape(-1).cpu(), minlength=card).double()
        p = p[p > 0] / p.sum()
        row[f"valid_unigram_{k}"] = float(-(p * p.log()).sum())
    row["valid_unigram"] = sum(row.values()) / codes.shape[1]
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
