"""The MAGNeT training solver (SPEC §4): one codebook stage per step, span masks at a cosine mask
rate, cross-entropy on the masked tokens of that codebook, CFG and word dropout, AdamW with the
released schedules, gradient clipping, EMA, validation per codebook, checkpoints that resume
exactly, optional sample generation, DDP / FSDP under torchrun.

Determinism: every random choice of step s on rank r (the data items, the stage, the mask rates
and positions, the dropouts) comes from generators seeded by (seed, s, r), and the data position
is the step number. A run stopped after the checkpoint of step s and resumed therefore computes
exactly what the uninterrupted run computes from step s + 1 on.

The rooms around it: how a run starts (fresh, fine-tune, resume) in setup.py, the objective in
objective.py, the DDP / FSDP wrapping in distributed.py, validation and samples in validation.py,
the run folder in runs.py.
"""
from __future__ import annotations

import json
import math
import random
import time
import typing as tp
from pathlib import Path

import torch
from tqdm import tqdm

from ..conditioners import make_conditioner, word_dropout
from ..data.dataset import SkipCounter, make_loader
from ..files import remove_stale_temps
from ..lm import MagnetLM
from . import distributed as dist_utils
from . import objective
from .lora import apply_lora, save_adapters
from .optim import EMA, make_optimizer, make_scheduler
from .presets import TrainConfig
from .faults import fault_pause
from .runs import (BEST_FILE, METRICS_FILE, MetricsLog, RunLock, checkpoint_path, latest_checkpoint,
                   save_checkpoint, step_seed, truncate_metrics, write_run_folder)
from .setup import build_model, final_config, load_data, run_info, run_spec, use_token_cache
from .validation import SampleWriter, Validator


class Solver:
    """Train or fine-tune one MAGNeT. `Solver(...).run()` trains to `cfg.max_steps`.

    cfg None with resume=True: the run in `out` continues with its own config (only the bookkeeping
    settings of `resume_overrides` may change); `continue_from` fine-tunes a model (setup.py)."""

    def __init__(self, cfg: tp.Optional[TrainConfig], data: tp.Optional[str], out: str, *,
                 valid: tp.Optional[str] = None, continue_from: tp.Optional[str] = None, resume: bool = False,
                 resume_overrides: tp.Optional[dict] = None, overwrite: bool = False,
                 device: tp.Optional[str] = None, progress: bool = True,
                 external_metadata: tp.Optional[str] = None):
        self.out = Path(out)
        self.device = dist_utils.resolve_device(device)
        # One training per folder: the main process (torchrun's rank 0; the others never touch the lock)
        # holds its RunLock from before anything there is read until run() ends, and clears the temporary
        # files a killed process left. A refused or failed start leaves no folder it created.
        self.lock = RunLock(self.out) if dist_utils.launched_rank() == 0 else None
        new_folder = not self.out.exists()
        if self.lock is not None:
            self.lock.acquire()
            remove_stale_temps(self.out)
        try:
            self._start(cfg, data, valid=valid, continue_from=continue_from, resume=resume,
                        resume_overrides=resume_overrides, overwrite=overwrite, progress=progress,
                        external_metadata=external_metadata)
        except BaseException:
            if self.lock is not None:
                self.lock.discard() if new_folder else self.lock.release()
            raise

    def _start(self, cfg: tp.Optional[TrainConfig], data: tp.Optional[str], *, valid: tp.Optional[str],
               continue_from: tp.Optional[str], resume: bool, resume_overrides: tp.Optional[dict], overwrite: bool,
               progress: bool, external_metadata: tp.Optional[str]) -> None:
        spec = run_spec(self.out, cfg, data, valid=valid, continue_from=continue_from, resume=resume,
                        resume_overrides=resume_overrides, overwrite=overwrite,
                        external_metadata=external_metadata, device=self.device)
        self.rank, self.world = dist_utils.init(self.device, spec.cfg.dist_timeout_minutes)
        dist_utils.barrier()  # no rank writes into the folder before the main one has cleared it
        self.main = self.rank == 0
        self.progress = progress and self.main
        if spec.cfg.batch_size % self.world:
            raise ValueError(f"batch_size {spec.cfg.batch_size} does not split over {self.world} processes: "
                             f"use a multiple of {self.world}")
        self.local_batch = spec.cfg.batch_size // self.world
        # the one way into a run (setup.py): the model, then the config true to it, then the data
        self.setup = build_model(spec, self.out, self.device)
        self.cfg = cfg = final_config(spec, self.setup)
        self.data = load_data(cfg, spec)
        if cfg.token_cache:
            self.data = use_token_cache(self.data, cfg, self.setup, self.out / "tokens", rank=self.rank,
                                        world=self.world, device=self.device, progress=self.progress)
        self.seq_len = self.setup.lm_cfg.seq_len
        self.lm = self.setup.lm.train().requires_grad_(True)
        text = self.setup.text_cfg
        self.conditioner = make_conditioner(text.name, text.kind, self.lm.condition_provider.output_proj,
                                            device=self.device)
        self.lora = apply_lora(self.lm, rank=cfg.lora_rank, alpha=cfg.lora_alpha) if cfg.lora_rank > 0 else None
        self.parallel = dist_utils.ParallelModel(objective.TrainingForward(self.lm), self.world, self.device,
                                                 fsdp=cfg.fsdp, lora=self.lora)
        self.sharded = self.parallel.sharded
        self.model = self.parallel.module
        self.optimizer = make_optimizer(self.model.parameters(), cfg.lr, cfg.betas, cfg.weight_decay, cfg.eps)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.warmup, cfg.max_steps, cfg.lr_min_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        # the EMA: on the main process's device; under FSDP every rank averages its own shards
        self.ema = EMA(self.parallel.local_state(), cfg.ema_decay) if self.main or self.sharded else None
        self.validator = Validator(self.data.valid_set, self.local_batch, cfg.valid_batches, self.batch_codes,
                                   self.text, seed=cfg.seed, precision=cfg.precision, best_path=self.out / BEST_FILE)
        self.samples = SampleWriter(self.out / "samples", self.data.valid_set, text, self.conditioner,
                                    self.setup.codec, steps=cfg.sample_steps, seed=cfg.seed, name=self.out.name)
        self.metrics = MetricsLog(self.out, enabled=self.main)
        self.step = 0
        self.log_window: tp.List[float] = []  # the training losses of the steps since the last logged row
        self.skips = SkipCounter()
        if resume:
            self._load_checkpoint()
        elif self.main:
            write_run_folder(self.out, run_info(spec, cfg, self.setup), self.setup.codec_package)
        dist_utils.barrier()

    @property
    def train_set(self):
        return self.data.train_set

    @property
    def valid_set(self):
        return self.data.valid_set

    # ---------------------------------------------------------------------------- state
    def full_state(self) -> tp.Dict[str, torch.Tensor]:
        """The LM's full state dict (LoRA merged in, FSDP shards gathered), on every rank's call;
        complete on the main process."""
        return self.parallel.full_state()

    def ema_state(self) -> tp.Optional[tp.Dict[str, torch.Tensor]]:
        """The full EMA weights on the main process's device (None on the other ranks); collective
        under FSDP, where each rank holds the averages of its own shards."""
        return None if self.ema is None else self.parallel.gather(self.ema.state)

    def checkpoint_state(self) -> dict:
        """Everything needed to continue exactly (called on every rank; used on the main one)."""
        model, optim = self.parallel.training_state(self.optimizer)
        ema = self.ema_state()  # collective under FSDP
        return {
            "step": self.step, "model": model, "optimizer": optim, "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if ema is None else {**self.ema.state_dict(), "state": {k: v.detach().cpu()
                                                                               for k, v in ema.items()}},
            "best_valid": self.validator.best, "config": json.dumps(self.cfg.to_dict()),
            "torch_rng": torch.get_rng_state(), "python_rng": json.dumps(random.getstate()),
            # the next logged row averages steps on both sides of a resume (over all processes: collective)
            "log_window": dist_utils.means(self.log_window, self.device), "skipped_audio": self.skips.count,
        }

    def save_checkpoint(self) -> Path:
        state = self.checkpoint_state()
        path = checkpoint_path(self.out, self.step)
        if self.main:
            save_checkpoint(state, self.out, self.step, self.cfg.keep_last)
            if self.lora is not None:
                save_adapters(self.lora, self.out / "adapters.safetensors", {"step": str(self.step)})
        dist_utils.barrier()
        return path

    def _load_checkpoint(self) -> None:
        path = latest_checkpoint(self.out)
        if path is None:
            raise ValueError(f"--resume: {self.out} has no checkpoint yet; start the run again without --resume")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.parallel.load_training_state(state["model"], state["optimizer"], self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            saved = state["ema"]
            self.ema.load_state_dict({**saved, "state": self.parallel.scatter(saved["state"])})
        self.step = int(state["step"])
        self.validator.best = float(state["best_valid"])
        self.log_window = list(state.get("log_window", []))  # older checkpoints: none
        self.skips.count = int(state.get("skipped_audio", 0))
        torch.set_rng_state(state["torch_rng"])
        random.setstate(_tuples(json.loads(state["python_rng"])))
        if self.main:
            truncate_metrics(self.out / METRICS_FILE, self.step)

    # ---------------------------------------------------------------------------- one step
    def autocast(self) -> tp.ContextManager:
        return objective.autocast(self.cfg.precision, self.device)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, C, L] -> codes [B, K, T] from the frozen codec, cut / checked to the model's T."""
        codes = self.setup.codec.encode(wav.to(self.device))
        if codes.shape[-1] < self.seq_len:
            raise ValueError(f"the codec gave {codes.shape[-1]} frames for a {self.cfg.segment_duration} s "
                             f"segment, expected {self.seq_len}")
        return codes[..., :self.seq_len].long()

    def batch_codes(self, batch: dict) -> torch.Tensor:
        """The batch's ground-truth tokens [B, K, T]: from the token cache, or encoded now."""
        if "codes" in batch:
            return batch["codes"].to(self.device)
        return self.encode(batch["wav"])

    def text(self, descriptions: tp.List[tp.Optional[str]]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """The frozen text encoder's states [B, S, d_text] and mask [B, S] of the descriptions."""
        inputs = self.conditioner.tokenize(descriptions)
        return self.conditioner.text_states(inputs), inputs["attention_mask"]

    def train_step(self, batch: tp.Dict[str, tp.Any]) -> dict:
        cfg = self.cfg
        step = self.step + 1  # the step being taken, 1-based
        rng = random.Random(f"{cfg.seed}:{step}:{self.rank}")
        generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, self.rank))
        codes = self.batch_codes(batch)
        descriptions = list(batch["description"])
        if rng.random() < cfg.cfg_dropout:  # one coin for the whole batch
            descriptions = [None] * len(descriptions)
        descriptions = word_dropout(descriptions, cfg.word_dropout, rng)
        states, mask = self.text(descriptions)
        stage = rng.randint(0, self.setup.lm_cfg.n_q - 1)
        loss, _ = objective.masked_loss(self.model, codes, states.to(self.device), mask.to(self.device), stage,
                                        generator, self.setup.lm_cfg, cfg.precision)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        fault_pause("step")  # test-only (faults.py): gradients computed, weights not yet updated
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step = step
        if step % cfg.ema_every == 0 and self.ema is not None:
            self.ema.update(self.parallel.local_state())
        return {"ce": float(loss.detach()), "stage": stage, "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0], "skipped": batch["skipped"]}

    # ---------------------------------------------------------------------------- EMA weights
    def ema_lm(self, ema_state: tp.Optional[tp.Dict[str, torch.Tensor]] = None) -> MagnetLM:
        """A plain MagnetLM holding the EMA weights (`ema_state`, from `ema_state()`, or this process's
        own averages when not sharded), in eval mode."""
        lm = MagnetLM.empty(self.setup.lm_cfg, self.device)
        lm.load_state_dict(self.ema.state if ema_state is None else ema_state, strict=True)
        return lm.eval()

    def validate(self, ema_state: tp.Optional[tp.Dict[str, torch.Tensor]] = None) -> dict:
        """Cross-entropy and perplexity per codebook with the EMA weights on the fixed batches, on the
        main process (under FSDP pass `ema_state()`, which every rank calls); keeps best.pt."""
        return self.validator(self.ema_lm(ema_state), self.step)

    def generate_samples(self, ema_state: tp.Optional[tp.Dict[str, torch.Tensor]] = None) -> tp.List[Path]:
        """Audio for a few validation descriptions with the current EMA weights, under samples/, on the
        main process (under FSDP pass `ema_state()`, which every rank calls)."""
        return self.samples(self.ema_lm(ema_state), self.step)

    # ---------------------------------------------------------------------------- the loop
    def run(self, until: tp.Optional[int] = None) -> dict:
        """Train to `cfg.max_steps` (or stop after step `until`, e.g. to train in chunks; the schedule
        still spans max_steps). Returns the last logged metrics."""
        cfg = self.cfg
        end = min(cfg.max_steps, until or cfg.max_steps)
        if self.lock is not None:
            self.lock.acquire()  # again, for a run trained in chunks
        self.metrics.open()
        loader = make_loader(self.train_set, self.local_batch, self.step, self.rank, self.world,
                             num_workers=cfg.num_workers)
        last: dict = {}
        t0, timed = time.perf_counter(), 0
        bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", disable=not self.progress,
                   dynamic_ncols=True, desc="train")
        try:
            for batch in loader:
                if self.step >= end:
                    break
                out = self.train_step(batch)
                self.skips.update(out["skipped"])
                self.log_window.append(out["ce"])
                timed += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == end:
                    window = self.log_window
                    ce = dist_utils.mean(sum(window) / len(window), self.device)
                    elapsed = time.perf_counter() - t0
                    last = {"step": self.step, "ce": ce, "ppl": math.exp(min(ce, 50.0)), "lr": out["lr"],
                            "grad_norm": out["grad_norm"], "stage": out["stage"],
                            "steps_per_s": timed / max(elapsed, 1e-9), "skipped_audio": self.skips.count}
                    self.metrics.write(last)
                    bar.set_postfix(ce=f"{ce:.3f}", lr=f"{out['lr']:.2e}")
                    self.log_window, timed, t0 = [], 0, time.perf_counter()
                validating = self.step % cfg.valid_every == 0 or self.step == end
                sampling = bool(cfg.generate_every) and self.step % cfg.generate_every == 0
                ema_state = self.ema_state() if validating or sampling else None  # every rank: FSDP gathers
                if self.main and validating:
                    row = self.validate(ema_state)
                    self.metrics.write(row)
                    last = {**last, **row}
                    bar.write(f"step {self.step}: valid ce {row['valid_ce']:.4f} (ppl {row['valid_ppl']:.1f})")
                if self.main and sampling:
                    for path in self.generate_samples(ema_state):
                        bar.write(f"step {self.step}: sample {path}")
                del ema_state
                # the checkpoint comes last: it records a step whose rows, best.pt and samples are all
                # written, so a run killed before it redoes the step whole on --resume
                if self.step % cfg.save_every == 0 or self.step == end:
                    self.save_checkpoint()
                dist_utils.barrier()
        finally:
            bar.close()
            self.metrics.close()
            self.close()
        return last

    def close(self) -> None:
        """Let the run folder go (its lock); run() does so when it ends, and takes it again if called again."""
        if self.lock is not None:
            self.lock.release()



def _tuples(value: tp.Any) -> tp.Any:
    """JSON turned random.getstate()'s tuples into lists; turn them back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
