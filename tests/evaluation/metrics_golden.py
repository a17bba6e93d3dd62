"""The audio and weights behind the metrics' golden fixtures (tests/evaluation/fixtures/metrics_golden.pt).

`write_clips(folder)` writes three deterministic 16-bit clips (and captions.json) that the official code ran
on (`peer-metrics/run_reference.py --audio DIR --captions DIR/captions.json`, each target the clip reversed,
as that harness does by default); `randomize_(module, seed, gain)` redraws a module's weights exactly as the
harness's `fabricate.randomize_` fabricated the released-layout checkpoints, so the tests rebuild the same
random weights instead of committing gigabytes. `make_fixture.py` next to this file extracts the fixture.
"""
from __future__ import annotations

import json
import math
import typing as tp
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 32000
CLIPS = {  # name: (seconds, channels)
    "a_chord_3s_stereo.wav": (3.0, 2),
    "b_noise_1p2s.wav": (1.2, 1),
    "c_blip_0p5s.wav": (0.5, 1),
}
CAPTIONS = {
    "a_chord_3s_stereo.wav": "a bright major chord on an electric piano with soft noise",
    "b_noise_1p2s.wav": "white noise burst",
    "c_blip_0p5s.wav": "",
}
VGGISH_SEED, PASST_SEEDS, CLAP_SEED = 41, {"10s": 31, "20s": 32}, 21  # fabricate: seed * 1000 + k, seed 0


def clip(name: str) -> torch.Tensor:
    """[C, T] float32, exactly representable in 16 bits (what a WAV round trip returns)."""
    seconds, channels = CLIPS[name]
    n = int(round(seconds * SAMPLE_RATE))
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    if "chord" in name:
        x = sum(0.2 * torch.sin(2 * math.pi * f * t) for f in (261.63, 329.63, 392.0, 1046.5))
        x = torch.stack([x, 0.8 * x]) + 0.05 * torch.randn(2, n, generator=g, dtype=torch.float64)
    elif "noise" in name:
        x = 0.5 * torch.randn(1, n, generator=g, dtype=torch.float64).clamp(-2, 2) / 2
    else:
        x = (0.6 * torch.sin(2 * math.pi * 880 * t) * torch.exp(-6 * t))[None]
    x = x[:channels]
    return (x * 32767).round().clamp(-32768, 32767).float() / 32768


def write_clips(folder: Path) -> Path:
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        wav = clip(name)
        sf.write(folder / name, (wav.T.numpy() * 32768).astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
    (folder / "captions.json").write_text(json.dumps(CAPTIONS, indent=1) + "\n")
    return folder


def _draw(name: str, shape: torch.Size, g: torch.Generator, gain: float) -> torch.Tensor:
    """One parameter of the harness's recipe: N(0,1) x gain / sqrt(fan_in) for matrices and kernels, N(0, 0.02)
    for [1, ...] tensors and biases, 1 + 0.1 N for other vectors, log(1/0.07) + 0.1 N for scalars."""
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) >= 2:
        return 0.02 * z if shape[0] == 1 else z * (gain / math.sqrt(z.numel() // shape[0]))
    if len(shape) == 1:
        return 0.02 * z if name.endswith("bias") else 1.0 + 0.1 * z
    return math.log(1 / 0.07) + 0.1 * z


def _draw_batchnorm(g: torch.Generator, channels: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    return 0.5 * torch.randn(channels, generator=g), 0.5 + 1.5 * torch.rand(channels, generator=g)


def randomize_(module: torch.nn.Module, seed: int, gain: float = 1.0) -> None:
    """The harness's deterministic randomiser: every trainable float parameter, in sorted name order, from one
    generator (`_draw`), then BatchNorm running stats."""
    g = torch.Generator().manual_seed(seed)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if not p.is_floating_point() or not p.requires_grad:
                continue
            p.copy_(_draw(name, p.shape, g, gain).to(p.dtype))
        for _, m in sorted(module.named_modules(), key=lambda kv: kv[0]):
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                mean, var = _draw_batchnorm(g, m.running_mean.shape[0])
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)


CLAP_BUFFERS = ("attn_mask", "relative_position_index", "running_mean", "running_var", "num_batches_tracked",
                "position_ids")
CLAP_FROZEN = ("conv_real.weight", "conv_imag.weight", "melW")


def torchlibrosa_kernels(n_fft: int = 1024) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa's STFT convolution kernels (periodic Hann times the DFT matrix, as numpy powers)."""
    import librosa

    window = librosa.filters.get_window("hann", n_fft, fftbins=True)
    x, y = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
    w = np.power(np.exp(-2 * np.pi * 1j / n_fft), x * y)[:, :n_fft // 2 + 1] * window[:, None]
    return torch.Tensor(np.real(w).T)[:, None, :], torch.Tensor(np.imag(w).T)[:, None, :]


def clap_released_state(seed: int = CLAP_SEED) -> tp.Dict[str, torch.Tensor]:
    """The harness's fabricated `music_audioset_epoch_15_esc_90.14.pt` state dict (keys without 'module.'):
    laion_clap's trainable parameters drawn in sorted name order, bn0's running stats, the frozen STFT kernels
    and slaney mel matrix as torchlibrosa computes them, the constant buffers as constructed."""
    import librosa

    from openmagnet.evaluation.clap import Clap, released_state_dict

    state = released_state_dict(Clap())
    g = torch.Generator().manual_seed(seed)
    for name in sorted(state):
        if name.endswith(CLAP_BUFFERS) or name.endswith(CLAP_FROZEN) or not state[name].is_floating_point():
            continue
        state[name] = _draw(name, state[name].shape, g, 1.0)
    mean, var = _draw_batchnorm(g, state["audio_branch.bn0.running_mean"].shape[0])
    state["audio_branch.bn0.running_mean"], state["audio_branch.bn0.running_var"] = mean, var
    real, imag = torchlibrosa_kernels()
    state["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = real
    state["audio_branch.spectrogram_extractor.stft.conv_imag.weight"] = imag
    state["audio_branch.logmel_extractor.melW"] = torch.Tensor(
        librosa.filters.mel(sr=48000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T)
    return state
