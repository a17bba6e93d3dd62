"""The MAGNeT training solver (SPEC §4): one codebook stage per step, span masks at a cosine mask
rate, cross-entropy on the masked tokens of that codebook, CFG and word dropout, AdamW with the
released schedules, gradient clipping, EMA, validation per codebook, checkpoints that resume
exactly, optional sample generation, DDP / FSDP under torchrun.

Determinism: every random choice of step s on rank r (the data items, the stage, the mask rates
and positions, the dropouts) comes from generators seeded by (seed, s, r), and the data position
is the step number. A run stopped after the checkpoint of step s and resumed therefore computes
exactly what the uninterrupted run computes from step s + 1 on.

The run folder and the model a run starts from are in runs.py.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import random
import time
import typing as tp
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import __version__, hardware
from ..config import LMConfig, TextConfig
from ..files import atomic_save, atomic_write_text
from ..lm import MagnetLM
from . import distributed as dist_utils
from .runs import save_checkpoint as save_rotating
from .runs import (BEST_FILE, check_resume_overrides, CODEC_COPY, METRICS_FILE, RUN_FILE, Setup, load_codec, empty_lm,
                   build_setup, checkpoint_path, latest_checkpoint, read_run, step_seed,
                   truncate_metrics)
from .masking import cosine_mask_rate, masked_inputs, span_mask
from .optim import EMA, make_optimizer, make_scheduler
from .presets import TrainConfig


class TrainingForward(nn.Module):
    """What DDP / FSDP wrap: text states -> projected condition -> logits of one codebook."""

    def __init__(self, lm: nn.Module, touch_all_heads: bool = False):
        super().__init__()
        self.lm = lm
        # FSDP needs every parameter in every rank's graph (ranks train different codebooks): the
        # other heads then enter the loss with weight 0 and get exact zero gradients.
        self.touch_all_heads = touch_all_heads

    def forward(self, codes: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor,
                stage: int) -> torch.Tensor:
        """codes [B, K, T] (with mask tokens), text_states [B, S, d_text], text_mask [B, S]
        -> logits [B, T, card] of codebook `stage`."""
        lm = self.lm
        proj = lm.condition_provider.output_proj
        cond = proj(text_states.to(proj.weight.dtype)) * text_mask.to(proj.weight.dtype).unsqueeze(-1)
        logits = lm.stage_logits(codes, cond, stage)
        if self.touch_all_heads:
            logits = logits + 0.0 * sum(head.weight.sum() for k, head in enumerate(lm.linears) if k != stage)
        return logits


def resolve_precision(precision: str, device: torch.device, resume: bool = False) -> str:
    """The autocast precision a run uses on `device`: `auto` is fp16 on CUDA (with a gradient scaler,
    as the released runs), bf16 on a CPU with native bf16 matrix products, fp32 elsewhere. Reduced
    precision that would be slower than fp32 on this CPU (fp16 always, bf16 without native support)
    is refused."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and hardware.cpu_info().bf16_native else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    reason = hardware.slow_dtype_reason(device, dtype) if dtype is not None else None
    if reason is None:
        return precision
    fix = ("resume this run where its precision is fast (a CPU with native bf16, or CUDA)" if resume else
           "use --precision auto or fp32" + (" (fp16 is for CUDA)" if precision == "fp16" else ""))
    raise ValueError(f"--precision {precision} refused: {reason}: {fix}")


# ------------------------------------------------------------------------------------------------
# The solver
# ------------------------------------------------------------------------------------------------
class Solver:
    """Train or fine-tune one MAGNeT. `Solver(...).run()` trains to `cfg.max_steps`."""

    def __init__(self, cfg: tp.Optional[TrainConfig], data: tp.Optional[str], out: str, *,
                 valid: tp.Optional[str] = None, continue_from: tp.Optional[str] = None, resume: bool = False,
                 resume_overrides: tp.Optional[dict] = None, overwrite: bool = False,
                 device: tp.Optional[str] = None, progress: bool = True,
                 external_metadata: tp.Optional[str] = None):
        self.out = Path(out)
        self.device = dist_utils.resolve_device(device)
        if resume:
            info = read_run(self.out)
            cfg = TrainConfig(**{**info["config"], **check_resume_overrides(resume_overrides or {}, RESUME_CHANGEABLE)})
            data, valid = info["data"], info.get("valid")
            continue_from = None
            external_metadata = info.get("external_metadata")
        elif self.out.exists() and latest_checkpoint(self.out) is not None and not overwrite:
            raise ValueError(f"{self.out} already holds a training run: add --resume to continue it, "
                             f"or choose another --out (nothing there is overwritten)")
        self.cfg = cfg
        self._check_precision(resume)
        cfg = self.cfg
        self.rank, self.world = dist_utils.init(self.device, cfg.dist_timeout_minutes)
        self.main = self.rank == 0
        self.progress = progress and self.main
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size {cfg.batch_size} does not split over {self.world} processes: "
                             f"use a multiple of {self.world}")
        self.local_batch = cfg.batch_size // self.world
        self.data_dir, self.valid_dir = data, valid
        self.external_metadata = external_metadata
        self._load_data()
        self.setup = build_setup(cfg, self.device, continue_from) if not resume else self._resumed_setup()
        self.lm = self.setup.lm.train().requires_grad_(True)
        if continue_from:  # a fine-tuned model keeps its own length, codec and text encoder
            codec = self.setup.codec
            self.cfg = cfg = dataclasses.replace(
                cfg, segment_duration=self.setup.lm_cfg.segment_duration, sample_rate=int(round(codec.sample_rate)),
                text_encoder=self.setup.text_cfg.name, codec=str(continue_from))
            self._load_data()
        self.seq_len = self.setup.lm_cfg.seq_len
        if cfg.token_cache:
            self._use_token_cache()
        self._make_conditioner()
        self.lora = None
        if cfg.lora_rank > 0:
            from .lora import apply_lora

            self.lora = apply_lora(self.lm, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
        self.sharded = cfg.fsdp and self.world > 1
        self.model = self._wrap(TrainingForward(self.lm, touch_all_heads=self.sharded))
        self.optimizer = make_optimizer(self.model.parameters(), cfg.lr, cfg.betas, cfg.weight_decay, cfg.eps)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.warmup, cfg.max_steps, cfg.lr_min_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.precision == "fp16")
        # the EMA: on the main process's device; under FSDP every rank averages its own shards
        self.ema = EMA(self._ema_source(), cfg.ema_decay) if self.main or self.sharded else None
        self.step = 0
        self.best_valid = math.inf
        if resume:
            self._load_checkpoint()
        elif self.main:
            self._write_run_info(continue_from)
        dist_utils.barrier()

    # ---------------------------------------------------------------------------- construction
    def _check_precision(self, resume: bool = False) -> None:
        self.cfg = dataclasses.replace(self.cfg, precision=resolve_precision(self.cfg.precision, self.device,
                                                                             resume))

    def _load_data(self) -> None:
        from ..data.dataset import SegmentDataset
        from ..data.info import check_metadata
        from ..data.manifest import read_manifest

        cfg = self.cfg
        self.train_metas = read_manifest(self.data_dir)
        check_metadata(self.train_metas, cfg.task, self.external_metadata)
        self.valid_metas = read_manifest(self.valid_dir) if self.valid_dir else self.train_metas
        if self.valid_dir:
            check_metadata(self.valid_metas, cfg.task, self.external_metadata)
        common = dict(kind=cfg.task, segment_duration=cfg.segment_duration, sample_rate=cfg.sample_rate,
                      channels=cfg.channels, min_segment_ratio=cfg.min_segment_ratio,
                      external_metadata_dir=self.external_metadata)
        self._train_args = dict(seed=cfg.seed, merge_text_p=cfg.merge_text_p, drop_desc_p=cfg.drop_desc_p,
                                drop_other_p=cfg.drop_other_p, **common)
        self._valid_args = dict(seed=step_seed(cfg.seed, "valid"), **common)
        self.train_set = SegmentDataset(self.train_metas, **self._train_args)
        self.valid_set = SegmentDataset(self.valid_metas, **self._valid_args)

    def _use_token_cache(self) -> None:
        """Tokenise every file once (each process a share of the files; kept in RUN_DIR/tokens across
        resumes), then draw token segments instead of audio segments."""
        from ..data.tokens import TokenSegmentDataset, build_token_cache

        cache = self.out / "tokens"
        metas = list({m.path: m for m in [*self.train_metas, *self.valid_metas]}.values())
        build_token_cache(metas[self.rank::self.world], self.setup.codec, cache, sample_rate=self.cfg.sample_rate,
                          channels=self.cfg.channels, device=self.device, progress=self.progress)
        dist_utils.barrier()
        rate = self.setup.lm_cfg.frame_rate
        self.train_set = TokenSegmentDataset(self.train_metas, cache, rate, **self._train_args)
        self.valid_set = TokenSegmentDataset(self.valid_metas, cache, rate, **self._valid_args)

    def _resumed_setup(self) -> Setup:
        info = read_run(self.out)
        lm_cfg, text_cfg = LMConfig(**info["lm_config"]), TextConfig(**info["text_config"])
        with torch.device("meta"):
            lm = MagnetLM(lm_cfg)
        lm = lm.to_empty(device=self.device).float()  # weights come from the checkpoint
        with torch.no_grad():  # until then, defined values (LoRA merges for the EMA before the load: no NaN)
            for tensor in [*lm.parameters(), *lm.buffers()]:
                tensor.zero_()
        codec, package = load_codec(str(self.out / CODEC_COPY), self.device)
        return Setup(lm, lm_cfg, text_cfg, codec, package, info.get("base_xp"), info.get("source", "scratch"))

    def _make_conditioner(self) -> None:
        from ..conditioners import make_conditioner

        text = self.setup.text_cfg
        self.conditioner = make_conditioner(text.name, text.kind, self.lm.condition_provider.output_proj,
                                            device=self.device)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        if self.cfg.fsdp:
            fully_shard = dist_utils.fully_shard_fn()
            for layer in self.lm.transformer.layers:
                fully_shard(layer)
            return fully_shard(module)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def full_state(self) -> tp.Dict[str, torch.Tensor]:
        """The LM's full state dict (LoRA merged in, FSDP shards gathered), on every rank's call;
        complete on the main process."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                              cpu_offload=True))
            state = {k.removeprefix("lm."): v for k, v in state.items()}
        else:
            state = self.lm.state_dict()
        if self.lora is not None:
            from .lora import merge_lora

            state = merge_lora(copy.deepcopy(self.lora)).state_dict()
        return state

    def _ema_source(self) -> tp.Dict[str, torch.Tensor]:
        """What the EMA averages: the full LM state (on the main process), or this rank's shards under
        FSDP (no gathering)."""
        if not self.sharded:
            return self.full_state()
        DTensor, _ = dist_utils.dtensor_api()
        return {k.removeprefix("lm."): v.to_local() if isinstance(v, DTensor) else v
                for k, v in self.model.state_dict().items()}

    def ema_state(self) -> tp.Optional[tp.Dict[str, torch.Tensor]]:
        """The full EMA weights on the main process's device (None on the other ranks); collective
        under FSDP, where each rank holds the averages of its own shards."""
        if not self.sharded:
            return self.ema.state if self.ema is not None else None
        DTensor, _ = dist_utils.dtensor_api()
        layout = {k.removeprefix("lm."): v for k, v in self.model.state_dict().items()}
        full = {}
        for k, local in self.ema.state.items():
            ref = layout[k]
            if isinstance(ref, DTensor):
                local = DTensor.from_local(local, ref.device_mesh, ref.placements, shape=ref.shape,
                                           stride=ref.stride()).full_tensor()
            if self.main:
                full[k] = local
        return full if self.main else None

    def _ema_checkpoint(self) -> tp.Optional[dict]:
        state = self.ema_state()  # collective under FSDP
        if state is None:
            return None
        return {**self.ema.state_dict(), "state": {k: v.detach().cpu() for k, v in state.items()}}

    def _load_ema(self, saved: dict) -> None:
        """The checkpoint's full EMA into this rank's averages (its shards under FSDP)."""
        if self.sharded:
            DTensor, distribute_tensor = dist_utils.dtensor_api()
            layout = {k.removeprefix("lm."): v for k, v in self.model.state_dict().items()}
            shards = {}
            for k, v in saved["state"].items():
                ref = layout.get(k)
                if isinstance(ref, DTensor):
                    v = distribute_tensor(v.to(ref.device), ref.device_mesh, ref.placements).to_local()
                shards[k] = v
            saved = {**saved, "state": shards}
        self.ema.load_state_dict(saved)

    # ---------------------------------------------------------------------------- bookkeeping
    def _write_run_info(self, continue_from: tp.Optional[str]) -> None:
        info = {
            "openmagnet_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": self.cfg.to_dict(), "data": str(self.data_dir),
            "valid": str(self.valid_dir) if self.valid_dir else None,
            "external_metadata": self.external_metadata,
            "lm_config": dataclasses.asdict(self.setup.lm_cfg), "text_config": dataclasses.asdict(self.setup.text_cfg),
            "source": continue_from or "scratch", "base_xp": self.setup.base_xp,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_save(self.setup.codec_package, self.out / CODEC_COPY)
        atomic_write_text(json.dumps(info, indent=2, default=str) + "\n", self.out / RUN_FILE)
        (self.out / METRICS_FILE).unlink(missing_ok=True)

    def _log(self, row: dict) -> None:
        if not self.main:
            return
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    _tb = None

    def _open_tensorboard(self) -> None:
        if not self.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._tb = SummaryWriter(str(self.out / "tensorboard"))

    def checkpoint_state(self) -> dict:
        """Everything needed to continue exactly (called on every rank; used on the main one)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model = get_model_state_dict(self.model, options=opts)
            optim = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        else:
            model, optim = self.model.state_dict(), self.optimizer.state_dict()
        model = {k.removeprefix("module.").removeprefix("lm."): v for k, v in model.items()}
        return {
            "step": self.step, "model": model, "optimizer": optim, "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self._ema_checkpoint(),
            "best_valid": self.best_valid, "config": json.dumps(self.cfg.to_dict()),
            "torch_rng": torch.get_rng_state(), "python_rng": json.dumps(random.getstate()),
        }

    def save_checkpoint(self) -> Path:
        state = self.checkpoint_state()
        path = checkpoint_path(self.out, self.step)
        if self.main:
            save_rotating(state, self.out, self.step, self.cfg.keep_last)
            if self.lora is not None:
                from .lora import save_adapters

                save_adapters(self.lora, self.out / "adapters.safetensors", {"step": str(self.step)})
        dist_utils.barrier()
        return path

    def _load_checkpoint(self) -> None:
        path = latest_checkpoint(self.out)
        if path is None:
            raise ValueError(f"--resume: {self.out} has no checkpoint yet; start the run again without --resume")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model_state = state["model"]
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, {"lm." + k: v for k, v in model_state.items()}, options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        else:
            self.model.lm.load_state_dict(model_state, strict=True) if self.world == 1 else \
                self.model.module.lm.load_state_dict(model_state, strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self._load_ema(state["ema"])
        self.step = int(state["step"])
        self.best_valid = float(state["best_valid"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(_tuples(json.loads(state["python_rng"])))
        if self.main:
            truncate_metrics(self.out / METRICS_FILE, self.step)


    # ---------------------------------------------------------------------------- one step
    def autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

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
        inputs = self.conditioner.tokenize(descriptions)
        return self.conditioner.text_states(inputs), inputs["attention_mask"]

    def loss(self, codes: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, stage: int,
             generator: torch.Generator, model: tp.Optional[nn.Module] = None) -> tp.Tuple[torch.Tensor, int]:
        """Cross-entropy on the masked frames of codebook `stage` (mean over them), and their count."""
        B = codes.shape[0]
        rates = cosine_mask_rate(B, generator)
        masked = span_mask(rates, self.seq_len, self.setup.lm_cfg.span_len, generator).to(codes.device)
        inputs = masked_inputs(codes, stage, masked, self.setup.lm_cfg.mask_id)
        with self.autocast():
            logits = (model or self.model)(inputs, states, mask, stage)
        target = codes[:, stage]
        return F.cross_entropy(logits.float()[masked], target[masked]), int(masked.sum())

    def train_step(self, batch: tp.Dict[str, tp.Any]) -> dict:
        cfg = self.cfg
        step = self.step + 1  # the step being taken, 1-based
        rng = random.Random(f"{cfg.seed}:{step}:{self.rank}")
        generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, self.rank))
        codes = self.batch_codes(batch)
        descriptions = list(batch["description"])
        if rng.random() < cfg.cfg_dropout:  # one coin for the whole batch
            descriptions = [None] * len(descriptions)
        from ..conditioners import word_dropout

        descriptions = word_dropout(descriptions, cfg.word_dropout, rng)
        states, mask = self.text(descriptions)
        stage = rng.randint(0, self.setup.lm_cfg.n_q - 1)
        loss, _ = self.loss(codes, states.to(self.device), mask.to(self.device), stage, generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step = step
        if step % cfg.ema_every == 0 and self.ema is not None:
            self.ema.update(self._ema_source())
        return {"ce": float(loss.detach()), "stage": stage, "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0], "skipped": batch["skipped"]}

    # ---------------------------------------------------------------------------- validation
    def _valid_batches(self) -> tp.List[tuple]:
        """The fixed validation batches: (codes, text states, text mask), computed once."""
        if getattr(self, "_valid_cache", None) is None:
            from ..data.dataset import make_loader

            loader = make_loader(self.valid_set, self.local_batch, 0, 0, 1, num_workers=0)
            cache = []
            for _, batch in zip(range(self.cfg.valid_batches), loader, strict=False):
                states, mask = self.text(list(batch["description"]))
                cache.append((self.batch_codes(batch), states, mask))
            self._valid_cache = cache
        return self._valid_cache

    def _ema_lm(self, ema_state: tp.Optional[tp.Dict[str, torch.Tensor]] = None) -> MagnetLM:
        """A plain MagnetLM holding the EMA weights (`ema_state`, from `ema_state()`, or this process's
        own averages when not sharded), in eval mode."""
        ema_lm = empty_lm(self.setup.lm_cfg, self.device)
        ema_lm.load_state_dict(self.ema.state if ema_state is None else ema_state, strict=True)
        return ema_lm.eval()

    @torch.no_grad()
    def validate(self, ema_state: tp.Optional[tp.Dict[str, torch.Tensor]] = None) -> dict:
        """Cross-entropy and perplexity per codebook with the EMA weights on the fixed batches
        (masks drawn from a fixed seed), on the main process (under FSDP pass `ema_state()`, which
        every rank calls)."""
        ema_lm = self._ema_lm(ema_state)
        model = TrainingForward(ema_lm)
        row: dict = {"step": self.step}
        totals = []
        for stage in range(self.setup.lm_cfg.n_q):
            loss_sum, count = 0.0, 0
            for i, (codes, states, mask) in enumerate(self._valid_batches()):
                generator = torch.Generator().manual_seed(step_seed(self.cfg.seed, "valid", i, stage))
                loss, n = self.loss(codes, states, mask, stage, generator, model=model)
                loss_sum, count = loss_sum + float(loss) * n, count + n
            ce = loss_sum / max(count, 1)
            row[f"valid_ce_{stage}"], row[f"valid_ppl_{stage}"] = ce, math.exp(min(ce, 50.0))
            totals.append(ce)
        row["valid_ce"] = sum(totals) / len(totals)
        row["valid_ppl"] = math.exp(min(row["valid_ce"], 50.0))
        if row["valid_ce"] < self.best_valid:
            self.best_valid = row["valid_ce"]
            atomic_save({"best_state": {k: v.detach().cpu() for k, v in ema_lm.state_dict().items()},
                         "step": self.step, "valid_ce": row["valid_ce"]}, self.out / BEST_FILE)
            row["best"] = True
        return row

    @torch.no_grad()
    def generate_samples(self, ema_state: tp.Optional[tp.Dict[str, torch.Tensor]] = None) -> tp.List[Path]:
        """Generate audio for a few validation descriptions with the current EMA weights, under
        samples/, on the main process (under FSDP pass `ema_state()`, which every rank calls)."""
        from ..api import MAGNeT
        from ..audio import audio_write

        lm = self._ema_lm(ema_state)
        model = MAGNeT(f"{self.out.name}@{self.step}", lm, self.setup.text_cfg, self.setup.codec)
        conditioner = copy.copy(self.conditioner)
        conditioner.projection = lm.condition_provider.output_proj
        model._conditioner = conditioner
        model.set_generation_params(decoding_steps=list(self.cfg.sample_steps), span_arrangement="stride1")
        prompts = [self.valid_set[i]["description"] for i in range(2)]
        generator = torch.Generator(device=self.device).manual_seed(step_seed(self.cfg.seed, "samples"))
        wavs = model.generate(prompts, generator=generator)
        folder = self.out / "samples" / f"step_{self.step:08d}"
        paths = []
        for i, (prompt, wav) in enumerate(zip(prompts, wavs, strict=True)):
            paths.append(audio_write(folder / f"{i:02d}", wav.cpu(), model.sample_rate, strategy="peak"))
            (folder / f"{i:02d}.txt").write_text((prompt or "") + "\n")
        return paths

    # ---------------------------------------------------------------------------- the loop
    def run(self, until: tp.Optional[int] = None) -> dict:
        """Train to `cfg.max_steps` (or stop after step `until`, e.g. to train in chunks; the schedule
        still spans max_steps). Returns the last logged metrics."""
        from tqdm import tqdm

        from ..data.dataset import SkipCounter, make_loader

        cfg = self.cfg
        end = min(cfg.max_steps, until or cfg.max_steps)
        self._open_tensorboard()
        loader = make_loader(self.train_set, self.local_batch, self.step, self.rank, self.world,
                             num_workers=cfg.num_workers)
        skips = SkipCounter()
        window: tp.List[float] = []
        last: dict = {}
        t0 = time.perf_counter()
        bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", disable=not self.progress,
                   dynamic_ncols=True, desc="train")
        try:
            for batch in loader:
                if self.step >= end:
                    break
                out = self.train_step(batch)
                skips.update(out["skipped"])
                window.append(out["ce"])
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == end:
                    ce = dist_utils.mean(sum(window) / len(window), self.device)
                    elapsed = time.perf_counter() - t0
                    last = {"step": self.step, "ce": ce, "ppl": math.exp(min(ce, 50.0)), "lr": out["lr"],
                            "grad_norm": out["grad_norm"], "stage": out["stage"],
                            "steps_per_s": len(window) / max(elapsed, 1e-9), "skipped_audio": skips.count}
                    self._log(last)
                    bar.set_postfix(ce=f"{ce:.3f}", lr=f"{out['lr']:.2e}")
                    window, t0 = [], time.perf_counter()
                if self.step % cfg.save_every == 0 or self.step == end:
                    self.save_checkpoint()
                validating = self.step % cfg.valid_every == 0 or self.step == end
                sampling = bool(cfg.generate_every) and self.step % cfg.generate_every == 0
                ema_state = self.ema_state() if validating or sampling else None  # every rank: FSDP gathers
                if self.main and validating:
                    row = self.validate(ema_state)
                    self._log(row)
                    last = {**last, **row}
                    bar.write(f"step {self.step}: valid ce {row['valid_ce']:.4f} (ppl {row['valid_ppl']:.1f})")
                if self.main and sampling:
                    for path in self.generate_samples(ema_state):
                        bar.write(f"step {self.step}: sample {path}")
                del ema_state
                dist_utils.barrier()
        finally:
            bar.close()
            if self._tb is not None:
                self._tb.close()
        return last


def _tuples(value: tp.Any) -> tp.Any:
    """JSON turned random.getstate()'s tuples into lists; turn them back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


RESUME_CHANGEABLE = ("max_steps", "log_every", "valid_every", "save_every", "keep_last", "generate_every",
                     "num_workers", "dist_timeout_minutes")

