"""Training EnCodec codecs from scratch with openmagnet's own modules (SEANet + RVQ, SPEC §6).

The trained `EncodecModel` has the released state-dict layout (weight-normed convs with `weight_g` /
`weight_v`, `quantizer.vq.layers.{i}._codebook.{inited, cluster_size, embed, embed_avg}`), so the
`compression_state_dict.bin` written by `export_codec` loads in `checkpoint.codec_from_package` and in
audiocraft 1.3.0's `CompressionModel` loader. Mirrors audiocraft `solvers/compression.py` and
`quantization/core_vq.py` (training side), with these deliberate differences:

- dead codes are replaced *after* the EMA update, together with their `embed_avg` / `cluster_size`
  (audiocraft replaces them before the update, which then overwrites the replacement);
- k-means initialisation stores a consistent EMA state (embed_avg = centroid * count);
- fixed loss weights instead of audiocraft's gradient balancer (see `CodecTrainConfig`);
- no quantizer dropout: every step uses all `n_q` codebooks, as MAGNeT's codec does.

Determinism: the data of step s are the dataset items of step s (`data.make_loader`), and the k-means /
dead-code sampling of step s use a generator seeded by (seed, s), so `--resume` continues exactly.

Run folder: run.json, checkpoints/step_XXXXXXXX.pt (the last `keep_last`), metrics.jsonl.
Shapes: B batch, C audio channels, L samples, D latent dimension, K codebooks, T frames, N vectors.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import typing as tp
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ... import __version__
from ...checkpoint import AUDIOCRAFT_FORMAT_VERSION, CODEC_FILE
from ...codec.encodec import EncodecModel
from ...config import CodecConfig
from ...data.dataset import SegmentDataset, SkipCounter, make_loader
from ...data.manifest import read_manifest
from ...files import atomic_save, atomic_write_text, remove_stale_temps
from .. import runs
from ..runs import METRICS_FILE, RUN_FILE, MetricsLog, latest_checkpoint, step_seed, truncate_metrics
from ..runs import save_checkpoint as save_rotating
from .evaluate import evaluate_codec
from .balancer import Balancer
from .losses import (MultiResolutionSTFTLoss, MultiScaleMelLoss, MultiScaleSTFTDiscriminator, discriminator_loss,
                     generator_losses)
from .quantizer import TrainableEncodec, batch_usage, init_quantizer

RESUME_CHANGEABLE = ("save_every", "log_every", "keep_last", "valid_clips", "num_workers")
RATIOS = {32000: (8, 5, 4, 4), 16000: (8, 5, 4, 2)}  # 50 Hz frames, as the released music / sound codecs


@dataclasses.dataclass(frozen=True)
class CodecTrainConfig:
    """How a codec is trained. The losses of the output: waveform L1 (`l1`), multi-scale mel (`mel`, L1 on
    mels + MSE on log mels), multi-resolution STFT magnitudes (`stft` linear, `log_stft` log, bins down to
    4 Hz), and with `adversarial` the MS-STFT discriminator's hinge (`adv`) and feature matching (`feat`).

    With `balance` (default, as EnCodec) the weights are shares of the gradient at the output
    (balancer.py): w_l1 = w_mel = 1 give the waveform and the mel the same pull whatever their scales.
    Without it the loss is the plain weighted sum. The commitment loss (w_commit) is always added as is."""

    steps: int = 10_000
    batch_size: int = 8
    segment_seconds: float = 1.0
    lr: float = 3e-4
    betas: tp.Tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    max_norm: float = 1.0  # gradient clipping of the codec (0: off)
    seed: int = 0
    adversarial: bool = False
    kmeans_iters: int = 50
    kmeans_pool: float = 4.0  # fresh runs k-means on latents of this many x bins vectors (0: the first batch)
    dead_code_threshold: float = 2.0  # uses per EMA window (100 steps) below which a code is re-drawn
    bypass_p: float = 0.0  # per example, the probability that the decoder sees the unquantized latent
    tone_p: float = 0.0  # per example, the probability that a pure tone is mixed in (add_tones): pitches music lacks
    tone_range: tp.Tuple[float, float] = (55.0, 0.0)  # Hz, log-uniform; 0 as the top: 0.45 x the sample rate
    init_from: str = ""  # a codec run, checkpoint or exported codec whose weights (codebooks too) start this run
    quantize_after: int = 0  # autoencoder warm-up: the first steps skip the quantizer, then k-means on its latents
    n_mels: int = 64
    disc_filters: int = 32  # channels of each MS-STFT discriminator (adversarial runs)
    balance: bool = True
    balance_ema: float = 0.999  # decay of the balancer's averages of each loss's gradient norm
    w_l1: float = 1.0
    w_mel: float = 1.0
    w_stft: float = 1.0
    w_log_stft: float = 1.0
    w_adv: float = 2.0
    w_feat: float = 2.0
    w_commit: float = 1.0
    save_every: int = 500
    log_every: int = 10
    keep_last: int = 2
    valid_clips: int = 8
    num_workers: int = 0

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "tone_range", tuple(float(f) for f in self.tone_range))
        low, high = self.tone_range
        if not (0 < low and (high == 0 or low <= high)):
            raise ValueError(f"tone_range must be LOW HIGH in Hz with 0 < LOW <= HIGH (HIGH 0: 0.45 x the sample "
                             f"rate), got {low:g} {high:g}")
        if self.steps < 0 or self.batch_size < 1 or self.segment_seconds <= 0 or self.lr <= 0:
            raise ValueError(f"steps must be >= 0, batch_size >= 1, segment_seconds > 0 and lr > 0; got "
                             f"{self.steps}, {self.batch_size}, {self.segment_seconds}, {self.lr}")
        if self.save_every < 1 or self.log_every < 1 or self.keep_last < 1:
            raise ValueError("save_every, log_every and keep_last must be >= 1")


def codec_config(sample_rate: int = 32000, n_filters: int = 32, dimension: int = 128, lstm: int = 2,
                 n_q: int = 4, bins: int = 2048) -> CodecConfig:
    """A released-style codec config at 50 Hz frames: ratios 8,5,4,4 at 32 kHz, 8,5,4,2 at 16 kHz."""
    if sample_rate not in RATIOS:
        raise ValueError(f"sample_rate must be one of {sorted(RATIOS)} (50 Hz frames); got {sample_rate}")
    return CodecConfig(sample_rate=sample_rate, n_filters=n_filters, dimension=dimension, lstm=lstm,
                       ratios=RATIOS[sample_rate], n_q=n_q, bins=bins)


# ------------------------------------------------------------------------------------------------
# Export: compression_state_dict.bin in audiocraft's layout
# ------------------------------------------------------------------------------------------------
def codec_xp_cfg(cfg: CodecConfig, dead_code_threshold: float = 2.0, kmeans_iters: int = 50) -> dict:
    """audiocraft's compression xp.cfg sections for cfg (what `builders.get_compression_model` reads)."""
    return {
        "device": "cpu", "dtype": "float32", "sample_rate": cfg.sample_rate, "channels": cfg.channels,
        "compression_model": "encodec",
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": cfg.sample_rate,
                    "channels": cfg.channels, "causal": False, "renormalize": False},
        "seanet": {
            "dimension": cfg.dimension, "channels": cfg.channels, "causal": False, "n_filters": cfg.n_filters,
            "n_residual_layers": cfg.n_residual_layers, "ratios": list(cfg.ratios), "activation": "ELU",
            "activation_params": {"alpha": cfg.activation_alpha}, "norm": "weight_norm", "norm_params": {},
            "kernel_size": cfg.kernel_size, "residual_kernel_size": cfg.residual_kernel_size,
            "last_kernel_size": cfg.last_kernel_size, "dilation_base": cfg.dilation_base, "pad_mode": cfg.pad_mode,
            "true_skip": cfg.true_skip, "compress": cfg.compress, "lstm": cfg.lstm, "disable_norm_outer_blocks": 0,
            "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
            "encoder": {},
        },
        "rvq": {"n_q": cfg.n_q, "q_dropout": False, "bins": cfg.bins, "decay": 0.99, "kmeans_init": True,
                "kmeans_iters": kmeans_iters, "threshold_ema_dead_code": dead_code_threshold,
                "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False},
    }


def read_run(run_dir: tp.Union[str, Path]) -> dict:
    return runs.read_run(Path(run_dir), "a codec training run",
                         f"openmagnet codec train --data MANIFEST_DIR --out {run_dir}")


def export_codec(run_dir: tp.Union[str, Path], out_file: tp.Union[str, Path]) -> Path:
    """Write the latest checkpoint of a run (or a given checkpoints/step_*.pt) as a
    `compression_state_dict.bin` = {'best_state', 'xp.cfg' (YAML), 'version', 'exported': True};
    out_file may be a folder (the file is then named compression_state_dict.bin). Returns its path."""
    import yaml

    run = Path(run_dir)
    ckpt = run if run.is_file() else latest_checkpoint(run)
    run = run.parent.parent if run.is_file() else run
    info = read_run(run)
    if ckpt is None:
        raise ValueError(f"{run} has no checkpoint yet: train at least `save_every` steps first")
    cfg = _codec_cfg(info)
    tcfg = CodecTrainConfig(**info["train"])
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    xp = codec_xp_cfg(cfg, tcfg.dead_code_threshold, tcfg.kmeans_iters)
    xp["openmagnet"] = {"run": str(run.resolve()), "step": int(ckpt.stem.split("_")[-1]), "train": info["train"]}
    out = Path(out_file)
    if out.is_dir() or not out.suffix:
        out = out / CODEC_FILE
    pkg = {"best_state": {k: v.detach().float().clone().contiguous() for k, v in state.items()},
           "xp.cfg": yaml.safe_dump(xp, sort_keys=False), "version": AUDIOCRAFT_FORMAT_VERSION, "exported": True}
    atomic_save(pkg, out)
    return out


def initial_weights(source: tp.Union[str, Path], cfg: CodecConfig) -> tp.Dict[str, torch.Tensor]:
    """The codec weights of `source` for `codec train --init-from`: a codec run folder (its latest checkpoint),
    one of its checkpoints/step_*.pt, or an exported compression_state_dict.bin (or a folder holding one).
    They must fit `cfg` exactly (same sample rate, filters, dimension, LSTM layers, codebooks and bins)."""
    path = Path(source)
    if path.is_dir() and (path / CODEC_FILE).is_file():
        path = path / CODEC_FILE
    elif path.is_dir():
        path = latest_checkpoint(path)
        if path is None:
            raise ValueError(f"--init-from {source}: no checkpoint and no {CODEC_FILE} there; pass a codec run "
                             f"folder, one of its checkpoints/step_*.pt or an exported {CODEC_FILE}")
    elif not path.is_file():
        raise ValueError(f"--init-from {source}: no such file or folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ValueError(f"--init-from {path}: not a codec checkpoint ({type(e).__name__}); pass a codec run "
                         f"folder, checkpoint or exported {CODEC_FILE}") from None
    state = data.get("model", data.get("best_state")) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"--init-from {path}: holds neither a codec run checkpoint ('model') nor an exported "
                         f"codec ('best_state')")
    expected = EncodecModel(cfg).state_dict()
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    if {k: tuple(v.shape) for k, v in state.items()} != shapes:
        raise ValueError(f"--init-from {path}: that codec has another shape than this run's ({cfg.sample_rate} Hz, "
                         f"{cfg.n_filters} filters, dimension {cfg.dimension}, {cfg.lstm} LSTM layers, {cfg.n_q} x "
                         f"{cfg.bins} codes); pass the same --sample-rate/--n-filters/--dimension/--lstm/--n-q/--bins")
    return {k: v.to(expected[k].dtype) for k, v in state.items()}


def _codec_cfg(info: dict) -> CodecConfig:
    data = dict(info["codec_config"])
    data["ratios"] = tuple(data["ratios"])
    return CodecConfig(**data)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def train_codec(manifest_dir: tp.Optional[tp.Union[str, Path]], out_dir: tp.Union[str, Path], *,
                cfg: tp.Optional[CodecConfig] = None, steps: int = 10_000, batch_size: int = 8,
                segment_seconds: float = 1.0, lr: float = 3e-4, seed: int = 0, adversarial: bool = False,
                valid_manifest: tp.Optional[tp.Union[str, Path]] = None, resume: bool = False,
                progress: bool = True, device: tp.Optional[str] = None, **options: tp.Any) -> dict:
    """Train a codec on a manifest folder into run folder out_dir; returns the last logged metrics.

    options: any other `CodecTrainConfig` field (save_every, log_every, dead_code_threshold, w_mel, ...).
    resume=True continues the run in out_dir exactly from its last checkpoint: its codec and training
    settings are kept (the arguments are ignored), only `steps` and RESUME_CHANGEABLE options may change.
    One training per folder: out_dir's lock (runs.RunLock) is held throughout."""
    lock, new_folder = runs.RunLock(out_dir), not Path(out_dir).exists()
    lock.acquire()
    remove_stale_temps(out_dir)  # left by a killed run
    try:
        return _train_codec(manifest_dir, out_dir, cfg=cfg, steps=steps, batch_size=batch_size,
                            segment_seconds=segment_seconds, lr=lr, seed=seed, adversarial=adversarial,
                            valid_manifest=valid_manifest, resume=resume, progress=progress, device=device, **options)
    except BaseException:
        if new_folder:  # a failed start leaves no folder it created (as the LM's Solver)
            lock.discard()
        raise
    finally:
        lock.release()


def _train_codec(manifest_dir: tp.Optional[tp.Union[str, Path]], out_dir: tp.Union[str, Path], *,
                 cfg: tp.Optional[CodecConfig], steps: int, batch_size: int, segment_seconds: float, lr: float,
                 seed: int, adversarial: bool, valid_manifest: tp.Optional[tp.Union[str, Path]], resume: bool,
                 progress: bool, device: tp.Optional[str], **options: tp.Any) -> dict:
    if resume:
        info = read_run(out_dir)
        runs.check_resume_overrides(options, ("steps", *RESUME_CHANGEABLE), info["train"], flag="resume")
        tcfg = CodecTrainConfig(**{**info["train"], "steps": steps, **options})
        trainer = CodecTrainer(_codec_cfg(info), tcfg, info["data"], out_dir, valid=info.get("valid"),
                               resume=True, device=device, progress=progress)
    else:
        if manifest_dir is None:
            raise ValueError("manifest_dir is required: the folder written by `openmagnet data index`")
        tcfg = CodecTrainConfig(steps=steps, batch_size=batch_size, segment_seconds=segment_seconds, lr=lr,
                                seed=seed, adversarial=adversarial, **options)
        trainer = CodecTrainer(cfg or codec_config(), tcfg, str(manifest_dir), out_dir,
                               valid=str(valid_manifest) if valid_manifest else None, device=device,
                               progress=progress)
    return trainer.run()


def add_tones(wav: torch.Tensor, sample_rate: int, p: float, generator: torch.Generator,
              freq_range: tp.Tuple[float, float] = (55.0, 0.0)) -> torch.Tensor:
    """Mix a pure tone into each example of wav [B, C, L] with probability p: a sine of random phase at a
    log-uniform frequency within freq_range (a top of 0: 0.45 x the sample rate), peak amplitude uniform in
    [0.05, 0.5] (the sum clipped to [-1, 1]). Rendered music rarely holds a strong fundamental above A6;
    without such examples a codec learns to drop high pure tones."""
    B, _, L = wav.shape
    chosen = torch.rand(B, generator=generator) < p
    top = min(freq_range[1] or 0.45 * sample_rate, 0.45 * sample_rate)
    low, high = math.log(min(freq_range[0], top)), math.log(top)
    freqs = torch.exp(low + (high - low) * torch.rand(B, generator=generator, dtype=torch.float64))
    phases = 2 * math.pi * torch.rand(B, generator=generator, dtype=torch.float64)
    amps = 0.05 + 0.45 * torch.rand(B, generator=generator, dtype=torch.float64)
    t = torch.arange(L, dtype=torch.float64) / sample_rate
    tones = (amps[:, None] * torch.sin(2 * math.pi * freqs[:, None] * t + phases[:, None])).float()  # [B, L]
    tones = tones * chosen[:, None]
    return (wav + tones[:, None].to(wav.device)).clamp(-1.0, 1.0)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class CodecTrainer:
    """One codec training run: model, optional discriminator, optimisers, data, checkpoints."""

    def __init__(self, cfg: CodecConfig, tcfg: CodecTrainConfig, data: str, out: tp.Union[str, Path], *,
                 valid: tp.Optional[str] = None, resume: bool = False, device: tp.Optional[str] = None,
                 progress: bool = True):
        self.cfg, self.tcfg, self.data, self.valid = cfg, tcfg, data, valid
        self.out, self.progress = Path(out), progress
        self.device = torch.device(device or "cpu")
        if not resume and latest_checkpoint(self.out) is not None:
            raise ValueError(f"{self.out} already holds a codec run: add --resume to continue it, or choose "
                             f"another --out (nothing there is overwritten)")
        self.dataset = SegmentDataset(read_manifest(data), kind="music", segment_duration=tcfg.segment_seconds,
                                      sample_rate=cfg.sample_rate, channels=cfg.channels, seed=tcfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tcfg.seed)
            self.model = TrainableEncodec(cfg, tcfg.kmeans_iters, tcfg.dead_code_threshold,
                                          tcfg.bypass_p).to(self.device)
            self.disc = (MultiScaleSTFTDiscriminator(cfg.channels, tcfg.disc_filters).to(self.device)
                         if tcfg.adversarial else None)
        self.mel = MultiScaleMelLoss(cfg.sample_rate, tcfg.n_mels).to(self.device)
        self.stft = MultiResolutionSTFTLoss(cfg.sample_rate).to(self.device)
        output_losses = ("l1", "mel", "stft", "log_stft") + (("adv", "feat") if tcfg.adversarial else ())
        self.weights = {name: getattr(tcfg, f"w_{name}") for name in output_losses}
        self.balancer = Balancer(self.weights, ema_decay=tcfg.balance_ema) if tcfg.balance else None
        adamw = dict(lr=tcfg.lr, betas=tcfg.betas, weight_decay=tcfg.weight_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), **adamw)
        self.disc_optimizer = torch.optim.AdamW(self.disc.parameters(), **adamw) if self.disc else None
        self.metrics = MetricsLog(self.out)
        self.step = 0
        if resume:
            self.load_checkpoint()
        else:
            if tcfg.init_from:  # trained codebooks come with the weights: no k-means
                self.model.model.load_state_dict(initial_weights(tcfg.init_from, cfg))
            self._write_run_info()
            if tcfg.kmeans_pool > 0 and tcfg.quantize_after == 0 and not tcfg.init_from:
                self.kmeans_init()

    @torch.no_grad()
    def kmeans_init(self) -> None:
        """k-means the codebooks of a fresh model on encoder latents of about kmeans_pool x bins vectors,
        drawn from the training data with their own seed (so step 1 still sees the data of step 1)."""
        t, cfg = self.tcfg, self.cfg
        per_batch = t.batch_size * -(-self.dataset.segment_length // cfg.hop_length)
        n_batches = max(1, -(-int(t.kmeans_pool * cfg.bins) // per_batch))
        pool = copy.copy(self.dataset)
        pool.seed = step_seed(t.seed, "kmeans")
        latents = []
        for _, batch in zip(range(n_batches), make_loader(pool, t.batch_size, 0), strict=False):
            z = self.model.model.encoder(batch["wav"].to(self.device))  # [B, D, T]
            latents.append(z.transpose(1, 2).reshape(-1, cfg.dimension))
        init_quantizer(self.model.model.quantizer, torch.cat(latents), t.kmeans_iters,
                       torch.Generator().manual_seed(step_seed(t.seed, "kmeans")), per_batch)

    # ---------------------------------------------------------------------------- bookkeeping
    def _write_run_info(self) -> None:
        info = {"openmagnet_version": __version__, "created": _now(), "codec_config": dataclasses.asdict(self.cfg),
                "train": dataclasses.asdict(self.tcfg), "data": self.data, "valid": self.valid}
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(info, indent=2) + "\n", self.out / RUN_FILE)
        (self.out / METRICS_FILE).unlink(missing_ok=True)

    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "model": self.model.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "disc": self.disc.state_dict() if self.disc else None,
                 "disc_optimizer": self.disc_optimizer.state_dict() if self.disc_optimizer else None,
                 "balancer": self.balancer.state_dict() if self.balancer else None,
                 "train": json.dumps(dataclasses.asdict(self.tcfg))}
        return save_rotating(state, self.out, self.step, self.tcfg.keep_last)

    def load_checkpoint(self) -> None:
        path = latest_checkpoint(self.out)
        if path is None:
            raise ValueError(f"--resume: {self.out} has no checkpoint yet; start the run again without --resume")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.balancer is not None:
            self.balancer.load_state_dict(state["balancer"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.step = int(state["step"])
        truncate_metrics(self.out / METRICS_FILE, self.step)

    # ---------------------------------------------------------------------------- one step
    def train_step(self, wav: torch.Tensor) -> dict:
        """One optimiser step on wav [B, C, L] (and one discriminator step first, when adversarial)."""
        t = self.tcfg
        step = self.step + 1
        generator = torch.Generator().manual_seed(step_seed(t.seed, step))
        if t.tone_p > 0:
            tones = torch.Generator().manual_seed(step_seed(t.seed, "tones", step))
            wav = add_tones(wav, self.cfg.sample_rate, t.tone_p, tones, t.tone_range)
        self.model.train()
        if step == t.quantize_after + 1 and t.quantize_after > 0 and t.kmeans_pool > 0 and not t.init_from:
            self.kmeans_init()  # the codebooks start from the warmed-up encoder's latents
        out = self.model(wav, generator, quantize=step > t.quantize_after or bool(t.init_from))
        losses = {"l1": F.l1_loss(out.wav, wav), "mel": self.mel(out.wav, wav), **self.stft(out.wav, wav)}
        row: dict = {}
        if self.disc is not None:
            self.disc.requires_grad_(True)
            d_loss = discriminator_loss(self.disc(wav), self.disc(out.wav.detach()))
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_optimizer.step()
            self.disc.requires_grad_(False)  # the generator's backward skips the discriminator's weights
            with torch.no_grad():
                real = self.disc(wav)
            losses["adv"], losses["feat"] = generator_losses(real, self.disc(out.wav))
            row["d_loss"] = float(d_loss.detach())
        total = sum(self.weights[name] * losses[name] for name in self.weights) + t.w_commit * out.commit
        self.optimizer.zero_grad(set_to_none=True)
        if self.balancer is not None:
            balanced = {k: losses[k] for k in self.weights}
            row.update(self.balancer.backward(balanced, out.wav, other=t.w_commit * out.commit))
        else:
            total.backward()
        losses["commit"] = out.commit
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.max_norm if t.max_norm > 0 else float("inf"))
        self.optimizer.step()
        self.step = step
        row.update({"loss": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()},
                    "grad_norm": float(norm), "replaced": out.replaced,
                    "batch_usage": batch_usage(out.codes, self.cfg.bins)})
        return row

    # ---------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train to tcfg.steps; returns the last logged row ({"step": step} alone when the run was already
        trained that far)."""
        from tqdm import tqdm

        t = self.tcfg
        loader = make_loader(self.dataset, t.batch_size, self.step, num_workers=t.num_workers)
        skips, window, last = SkipCounter(), [], {}
        t0 = time.perf_counter()
        bar = tqdm(total=t.steps, initial=self.step, unit="step", disable=not self.progress, dynamic_ncols=True,
                   desc="codec")
        try:
            for batch in loader:
                if self.step >= t.steps:
                    break
                row = self.train_step(batch["wav"].to(self.device))
                skips.update(batch)
                window.append(row)
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    last = {"step": self.step, **{k: sum(r[k] for r in window) / len(window) for k in window[0]},
                            "steps_per_s": len(window) / max(time.perf_counter() - t0, 1e-9),
                            "skipped_audio": skips.count}
                    self.metrics.write(last)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", mel=f"{last['mel']:.3f}")
                    window, t0 = [], time.perf_counter()
                if self.step % t.save_every == 0 or self.step == t.steps:
                    if self.valid:  # before the checkpoint: a run killed in validation redoes the step whole
                        last = {**last, **self.validate()}
                        bar.write(f"step {self.step}: valid mel {last['valid_mel_distance']:.3f} "
                                  f"si-sdr {last['valid_si_sdr']:.2f} dB")
                    self.save_checkpoint()
        finally:
            bar.close()
        return last or {"step": self.step}

    def validate(self) -> dict:
        self.model.eval()
        metrics = evaluate_codec(self.model.model, self.valid, n_clips=self.tcfg.valid_clips,
                                 seconds=self.tcfg.segment_seconds)
        self.model.train()
        row = {"step": self.step, **{f"valid_{k}": v for k, v in metrics.items()}}
        self.metrics.write(row)
        return row
