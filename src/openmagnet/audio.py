"""Audio I/O and level handling: read, write, resample, normalise.

Owns everything that touches audio files or audio levels. Mirrors audiocraft `data/audio.py`
(`audio_read`, `audio_write`) and `data/audio_utils.py` (`convert_audio`, `normalize_audio`),
SPEC §1.4. Differences from the reference, all deliberate:

- files are written through soundfile (libsndfile); `ffmpeg` is only a fallback for mp3/ogg when
  the installed libsndfile cannot encode them. wav and flac are 16-bit PCM, quantised like
  ffmpeg's float -> s16 conversion (round(x * 32768), clamped to int16).
- integrated loudness (ITU-R BS.1770-4) is measured with pyloudnorm instead of torchaudio.
- writes are atomic: a temporary file in the target directory is renamed onto the final path.
- silent input is left unchanged by 'peak' and 'rms' (the reference divides by zero), and the
  caller's tensor is never modified in place.

Shapes: C audio channels, T samples. soundfile, pyloudnorm and julius are imported inside the
functions that need them, so importing this module loads only torch and numpy.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import subprocess
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import torch

from .files import atomic_file

__all__ = ['audio_read', 'audio_write', 'convert_audio', 'convert_audio_channels',
           'integrated_loudness', 'normalize_audio', 'normalize_loudness', 'remove_dc']

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, os.PathLike]

FORMATS = ('wav', 'flac', 'mp3', 'ogg')
STRATEGIES = ('peak', 'clip', 'rms', 'loudness', '', 'none')

# libsndfile container / codec names for each output format.
_SOUNDFILE_CODECS = {
    'wav': ('WAV', 'PCM_16'),
    'flac': ('FLAC', 'PCM_16'),
    'mp3': ('MP3', 'MPEG_LAYER_III'),
    'ogg': ('OGG', 'VORBIS'),
}

# Nominal Vorbis bitrates (kbps, 44.1 kHz stereo) for quality levels 0..10, used to turn an
# `ogg_rate` into libsndfile's compression level.
_VORBIS_KBPS = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)


# --------------------------------------------------------------------------- channels / rate

def convert_audio_channels(wav: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """Change the channel count of wav [..., C, T] to [..., channels, T].

    Mono output averages all channels; mono input is repeated; extra channels are dropped
    (the first `channels` are kept). Fewer non-mono channels than requested is an error.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}.")
    *batch, src_channels, length = wav.shape
    if src_channels == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if src_channels == 1:
        return wav.expand(*batch, channels, length)
    if src_channels > channels:
        return wav[..., :channels, :]
    raise ValueError(f"cannot make {channels} channels from {src_channels}: only mono audio can be "
                     "up-mixed; pass to_channels <= the input's channel count.")


def convert_audio(wav: torch.Tensor, from_rate: float, to_rate: float,
                  to_channels: int) -> torch.Tensor:
    """Resample wav [..., C, T] from `from_rate` to `to_rate` Hz, then convert to `to_channels`.

    Returns [..., to_channels, T'] with T' = int(T * to_rate / from_rate) (julius.resample_frac
    on the integer rates, exactly as audiocraft), except for rates whose ratio has no small fraction
    (see `resampling_rates`).
    """
    old, new = resampling_rates(from_rate, to_rate)
    if old != new:
        wav = _resampler(old, new, wav.device, wav.dtype)(wav)
    return convert_audio_channels(wav, to_channels)


@functools.lru_cache(maxsize=8)
def _resampler(old: int, new: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """julius.ResampleFrac(old, new) on `device` in `dtype`, built once: building its filter bank is a Python loop
    over the output phases (320 for 44.1 -> 32 kHz), far slower than applying it."""
    import julius

    return julius.ResampleFrac(old, new).to(device=device, dtype=dtype)


RESAMPLE_KERNEL_LIMIT = 1 << 22  # elements of julius' filter bank (16 MB); 44.1 kHz -> 32 kHz needs 163,520
RESAMPLE_PHASE_LIMIT = 1 << 12  # filters in the bank, one per output phase (built one by one); 44.1 -> 32 kHz: 320


def _resample_size(old: int, new: int, zeros: int = 24, rolloff: float = 0.945) -> tp.Tuple[int, int]:
    """(filters, elements) of the filter bank julius.resample_frac(old, new) builds: one filter per output phase."""
    gcd = math.gcd(old, new)
    old, new = old // gcd, new // gcd
    if old == new:
        return 0, 0
    width = math.ceil(zeros * old / (min(old, new) * rolloff))
    return new, new * (2 * width + old)


def _fits(old: int, new: int) -> bool:
    filters, elements = _resample_size(old, new)
    return filters <= RESAMPLE_PHASE_LIMIT and elements <= RESAMPLE_KERNEL_LIMIT


def resampling_rates(from_rate: float, to_rate: float) -> tp.Tuple[int, int]:
    """The integer (from, to) rates julius resamples between: the given ones, unless their ratio reduces to no
    small fraction (44101 Hz -> 32000 Hz is 44101/32000: 32000 filters of 118,000 taps, minutes and 15 GB).
    Then `from` is moved to the nearest rate within 1% whose ratio to `to` is small (44100 Hz), with a warning:
    the audio plays that much faster or slower (0.002% here). A rate with no such rate near it (1 Hz) is a
    ValueError."""
    old, new = int(from_rate), int(to_rate)
    if old < 1 or new < 1:
        raise ValueError(f"sample rates must be at least 1 Hz, got {from_rate!r} -> {to_rate!r}")
    if _fits(old, new):
        return old, new
    divisors = {d for i in range(1, math.isqrt(new) + 1) if new % i == 0 for d in (i, new // i)}
    steps = [new // d for d in divisors]  # from = k * step makes from / new = k / d
    candidates = [max(1, round(old / step)) * step for step in steps]
    best = min((c for c in candidates if _fits(c, new)), key=lambda c: abs(c - old), default=None)
    if best is None or abs(best - old) > 0.01 * old:
        filters, elements = _resample_size(old, new)
        raise ValueError(f"cannot resample {old} Hz audio to {new} Hz: their ratio has no small fraction near it "
                         f"({filters} filters, {4 * elements / 1e6:,.0f} MB); resample it to a usual rate "
                         f"(8 kHz to 192 kHz) first")
    warnings.warn(f"resampling {old} Hz audio as if it were {best} Hz ({100 * abs(best - old) / old:.3g}% "
                  f"{'faster' if best > old else 'slower'}): {old} Hz to {new} Hz has no small ratio",
                  UserWarning, stacklevel=3)
    return best, new


# --------------------------------------------------------------------------- normalisation

DC_CUTOFF_HZ = 10.0  # remove_dc's corner: -6 dB here, -0.1 dB at 31 Hz (B0, a 5-string bass's lowest note)
DC_PAD_SECONDS = 1.0  # mirrored audio each side of a clip, so its ends see no jump; the filter settles in ~0.2 s


def remove_dc(wav: torch.Tensor, sample_rate: float, cutoff_hz: float = DC_CUTOFF_HZ,
              periodic: bool = False) -> torch.Tensor:
    """wav [..., T] without its DC offset and drift below ~`cutoff_hz`: a zero-phase high-pass (the response of
    a 2nd-order Butterworth run forwards and backwards, |H(f)| = 1 / (1 + (cutoff / f)^4): -6 dB at the cutoff,
    -0.6 dB at 16 Hz, -0.1 dB at 31 Hz, flat above, no phase change), applied in the frequency domain. Each end
    is extended by its mirror image (up to DC_PAD_SECONDS), so that the offset carries on at its level through
    the ends (no step; what remains at the edges is a few hundredths in the first 20 ms under a loud bass, which
    no extension of unknown music avoids); `periodic=True` treats the clip as one period of a loop instead (no
    padding: its wrap stays seamless). Not in the reference:
    openmagnet applies it to written clips of the command line and the app, and to `generate()`'s audio where
    the model's generation settings ask for it (`remove_dc=True`), never on the parity path."""
    length = wav.shape[-1]
    if length < 2:
        return wav - wav.mean(dim=-1, keepdim=True)
    work = wav.to(torch.float64) if wav.device.type != "mps" else wav.float()
    pad = 0 if periodic else min(length - 1, int(DC_PAD_SECONDS * sample_rate))
    if pad:  # mirror images (even): the offset carries on at its own level through each end, with no step
        work = torch.cat([work[..., 1:pad + 1].flip(-1), work, work[..., -pad - 1:-1].flip(-1)], dim=-1)
    n = work.shape[-1]
    freqs = torch.fft.rfftfreq(n, d=1.0 / sample_rate, device=work.device, dtype=work.dtype)
    ratio = cutoff_hz / freqs.clamp_min(1e-12)
    response = 1.0 / (1.0 + ratio ** 4)
    response[0] = 0.0
    out = torch.fft.irfft(torch.fft.rfft(work, dim=-1) * response, n=n, dim=-1)
    return out[..., pad:pad + length].to(wav.dtype)


def crossfade_regions(original: torch.Tensor, generated: torch.Tensor, regions: tp.Sequence[tp.Tuple[float, float]],
                      sample_rate: int, seconds: float) -> torch.Tensor:
    """original outside the regions, generated inside, with linear cross-fades of `seconds` centred on each
    region edge (both [B, C, T])."""
    T = generated.shape[-1]
    weight = torch.zeros(T, dtype=generated.dtype, device=generated.device)  # 1 = generated
    half = seconds * sample_rate / 2
    t = torch.arange(T, device=generated.device, dtype=torch.float64)
    for start, end in regions:
        a, b = start * sample_rate, end * sample_rate
        if half > 0:
            rise = ((t - (a - half)) / (2 * half)).clamp(0, 1)
            fall = (((b + half) - t) / (2 * half)).clamp(0, 1)
        else:
            rise, fall = (t >= a).double(), (t < b).double()
        weight = torch.maximum(weight, torch.minimum(rise, fall).to(weight.dtype))
    return original[..., :T] * (1 - weight) + generated * weight


def _check_wav(wav: torch.Tensor) -> torch.Tensor:
    """Validate a waveform and return it as [C, T]."""
    if not isinstance(wav, torch.Tensor):
        raise TypeError("wav must be a torch.Tensor of shape [C, T] or [T], got "
                        f"{type(wav).__name__}.")
    if not wav.dtype.is_floating_point:
        raise TypeError(f"wav must be a floating point tensor, got {wav.dtype}; convert it with "
                        "wav.float() / 32768 for int16 PCM.")
    if wav.dim() == 1:
        wav = wav[None]
    elif wav.dim() != 2:
        raise ValueError(f"wav must have shape [C, T] or [T], got {tuple(wav.shape)}; "
                         "write batched audio one item at a time.")
    if not bool(torch.isfinite(wav).all()):
        raise ValueError("wav contains NaN or infinite values; check the model output before "
                         "writing it.")
    return wav


def _clip(wav: torch.Tensor, log_clipping: bool, stem_name: tp.Optional[str]) -> torch.Tensor:
    """Clamp wav to [-1, 1], logging how much was clipped when asked."""
    peak = wav.abs().max().item() if wav.numel() else 0.0
    if log_clipping and peak > 1:
        fraction = (wav.abs() > 1).float().mean().item()
        logger.warning("clipping %s: %.4f%% of samples exceed 1 (peak %.3f); a little is harmless",
                       stem_name or '', 100 * fraction, peak)
    return wav.clamp(-1, 1)


def integrated_loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """ITU-R BS.1770-4 integrated loudness of wav [C, T] or [T] in LUFS (pyloudnorm meter)."""
    import pyloudnorm

    wav = wav if wav.dim() == 2 else wav[None]
    if wav.shape[-1] < int(0.4 * sample_rate):
        raise ValueError(f"loudness needs at least 0.4 s of audio, got {wav.shape[-1]} samples at "
                         f"{sample_rate} Hz; use strategy='peak' for short clips.")
    meter = pyloudnorm.Meter(sample_rate)
    data = wav.detach().cpu().double().numpy().T  # [T, C]; to the CPU first: MPS has no float64
    return float(meter.integrated_loudness(data))


def normalize_loudness(wav: torch.Tensor, sample_rate: int, loudness_headroom_db: float = 14,
                       loudness_compressor: bool = False,
                       energy_floor: float = 2e-3) -> torch.Tensor:
    """Scale wav [C, T] to an integrated loudness of -loudness_headroom_db LUFS.

    Audio whose overall RMS is below `energy_floor` is returned unchanged. With
    `loudness_compressor`, tanh soft-clips the scaled signal. No clamping here.
    """
    energy = wav.pow(2).mean().sqrt().item()
    if energy < energy_floor:
        return wav
    loudness = integrated_loudness(wav, sample_rate)
    if not np.isfinite(loudness):  # every block fell under the absolute gate
        return wav
    gain = 10.0 ** ((-loudness_headroom_db - loudness) / 20.0)
    out = wav * gain
    return torch.tanh(out) if loudness_compressor else out


def normalize_audio(wav: torch.Tensor, normalize: bool = True, strategy: str = 'peak',
                    peak_clip_headroom_db: float = 1, rms_headroom_db: float = 18,
                    loudness_headroom_db: float = 14, loudness_compressor: bool = False,
                    log_clipping: bool = False, sample_rate: tp.Optional[int] = None,
                    stem_name: tp.Optional[str] = None) -> torch.Tensor:
    """Bring wav [C, T] to a safe level; returns a new tensor [C, T].

    Strategies:
        'peak': scale so max|x| = 10^(-peak_clip_headroom_db/20).
        'clip': clamp to +-10^(-peak_clip_headroom_db/20).
        'rms': scale so the RMS of the channel mean is 10^(-rms_headroom_db/20), then clamp to +-1.
        'loudness': scale to -loudness_headroom_db LUFS (needs `sample_rate`), optional tanh
            compressor, then clamp to +-1.
        '' or 'none': leave as is; the audio must already lie inside (-1, 1).
    With normalize=False, 'peak' and 'rms' only ever scale down.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown normalisation strategy {strategy!r}; use one of "
                         "'peak', 'clip', 'rms', 'loudness' or 'none'.")
    scale_peak = 10 ** (-peak_clip_headroom_db / 20)
    if strategy == 'peak':
        peak = wav.abs().max()
        if peak > 0:
            rescaling = scale_peak / peak
            if normalize or rescaling < 1:
                wav = wav * rescaling
    elif strategy == 'clip':
        wav = wav.clamp(-scale_peak, scale_peak)
    elif strategy == 'rms':
        rms = wav.mean(dim=0).pow(2).mean().sqrt()
        if rms > 0:
            rescaling = 10 ** (-rms_headroom_db / 20) / rms
            if normalize or rescaling < 1:
                wav = wav * rescaling
        wav = _clip(wav, log_clipping, stem_name)
    elif strategy == 'loudness':
        if sample_rate is None:
            raise ValueError("strategy='loudness' needs the sample_rate; pass sample_rate=...")
        wav = normalize_loudness(wav, sample_rate, loudness_headroom_db, loudness_compressor)
        wav = _clip(wav, log_clipping, stem_name)
    elif wav.numel() and wav.abs().max() >= 1:
        raise ValueError(f"strategy={strategy!r} needs audio inside (-1, 1), got a peak of "
                         f"{wav.abs().max().item():.3f}; use strategy='peak' or 'clip'.")
    return wav


# --------------------------------------------------------------------------- encoders

def _soundfile_supports(format: str) -> bool:
    """Whether the installed libsndfile can encode `format` ('wav', 'flac', 'mp3', 'ogg')."""
    import soundfile

    container, codec = _SOUNDFILE_CODECS[format]
    return (container in soundfile.available_formats()
            and codec in soundfile.available_subtypes(container))


def _to_int16(wav: torch.Tensor) -> np.ndarray:
    """wav [C, T] in [-1, 1] -> int16 array [T, C], rounding like ffmpeg's f32 -> s16."""
    pcm = (wav.detach().to('cpu', torch.float32) * 32768).round().clamp(-32768, 32767)
    return pcm.to(torch.int16).t().contiguous().numpy()


def _mp3_compression(mp3_rate: int, sample_rate: int) -> float:
    """libsndfile compression level in [0, 1] giving a constant `mp3_rate` kbps."""
    if sample_rate >= 32000:  # MPEG-1 layer III: 32..320 kbps
        top, bottom = 320, 32
    elif sample_rate >= 16000:  # MPEG-2: 8..160 kbps
        top, bottom = 160, 8
    else:  # MPEG-2.5: 8..64 kbps
        top, bottom = 64, 8
    return float(min(max((top - mp3_rate) / (top - bottom), 0.0), 1.0))


def _vorbis_compression(ogg_rate: float) -> float:
    """libsndfile compression level in [0, 1] for a nominal Vorbis bitrate of `ogg_rate` kbps."""
    quality = float(np.interp(ogg_rate, _VORBIS_KBPS, np.arange(len(_VORBIS_KBPS))))
    return 1.0 - quality / 10.0


def _write_soundfile(path: Path, wav: torch.Tensor, sample_rate: int, format: str,
                     mp3_rate: int, ogg_rate: tp.Optional[int]) -> None:
    """Encode wav [C, T] into `path` with libsndfile."""
    import soundfile

    container, codec = _SOUNDFILE_CODECS[format]
    options: tp.Dict[str, tp.Any] = {}
    if format in ('wav', 'flac'):
        data = _to_int16(wav)
    else:
        data = wav.detach().to('cpu', torch.float32).t().contiguous().numpy()  # [T, C]
    if format == 'mp3':
        options = dict(bitrate_mode='CONSTANT',
                       compression_level=_mp3_compression(mp3_rate, sample_rate))
    elif format == 'ogg' and ogg_rate is not None:
        options = dict(compression_level=_vorbis_compression(ogg_rate))
    with soundfile.SoundFile(str(path), mode='x', samplerate=sample_rate, channels=data.shape[1],
                             format=container, subtype=codec, **options) as f:
        f.write(data)


def _ffmpeg_flags(format: str, mp3_rate: int, ogg_rate: tp.Optional[int]) -> tp.List[str]:
    """ffmpeg output flags for mp3/ogg, as in audiocraft."""
    if format == 'mp3':
        return ['-f', 'mp3', '-c:a', 'libmp3lame', '-b:a', f'{mp3_rate}k']
    flags = ['-f', 'ogg', '-c:a', 'libvorbis']
    return flags + (['-b:a', f'{ogg_rate}k'] if ogg_rate is not None else [])


def _write_ffmpeg(ffmpeg: str, path: Path, wav: torch.Tensor, sample_rate: int,
                  flags: tp.List[str]) -> None:
    """Pipe wav [C, T] as interleaved float32 into the `ffmpeg` binary, writing `path`."""
    command = [ffmpeg, '-loglevel', 'error', '-y', '-f', 'f32le', '-ar', str(sample_rate),
               '-ac', str(wav.shape[0]), '-i', '-', *flags, str(path)]
    data = wav.detach().to('cpu', torch.float32).t().contiguous().numpy().tobytes()
    result = subprocess.run(command, input=data, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors='replace').strip().splitlines()
        raise RuntimeError(f"ffmpeg failed writing {path} (exit {result.returncode}): "
                           f"{message[-1] if message else 'no message'}")


def _encoder(format: str) -> tp.Tuple[str, tp.Optional[str]]:
    """Pick the encoder for `format`: ('soundfile', None) or ('ffmpeg', path to binary)."""
    if _soundfile_supports(format):
        return 'soundfile', None
    ffmpeg = shutil.which('ffmpeg')
    if ffmpeg is not None:
        return 'ffmpeg', ffmpeg
    raise ValueError(f"cannot write {format}: this libsndfile has no {format} encoder and ffmpeg "
                     "is not on PATH; install ffmpeg or use format='wav' or 'flac'.")


# --------------------------------------------------------------------------- public I/O

def audio_write(stem_name: PathLike, wav: torch.Tensor, sample_rate: int, format: str = 'wav',
                mp3_rate: int = 320, ogg_rate: tp.Optional[int] = None, normalize: bool = True,
                strategy: str = 'peak', peak_clip_headroom_db: float = 1,
                rms_headroom_db: float = 18, loudness_headroom_db: float = 14,
                loudness_compressor: bool = False, log_clipping: bool = True,
                make_parent_dir: bool = True, add_suffix: bool = True) -> Path:
    """Normalise wav [C, T] or [T] and write it to `stem_name` + '.' + format; return the path.

    format is 'wav' or 'flac' (16-bit PCM), 'mp3' (constant `mp3_rate` kbps) or 'ogg' (Vorbis,
    `ogg_rate` kbps nominal, encoder default when None). See `normalize_audio` for `normalize`,
    `strategy` and the headroom arguments. With add_suffix=False the path is `stem_name` as given.
    The file appears atomically: it is encoded under a temporary name in the same directory and
    renamed, so an interrupted write leaves nothing behind.
    """
    wav = _check_wav(wav).detach().cpu()  # before any dtype change: MPS refuses float64
    if format not in FORMATS:
        raise ValueError(f"unsupported audio format {format!r}; use one of 'wav', 'flac', "
                         "'mp3' or 'ogg'.")
    encoder, ffmpeg = _encoder(format)
    wav = normalize_audio(wav, normalize, strategy, peak_clip_headroom_db, rms_headroom_db,
                          loudness_headroom_db, loudness_compressor, log_clipping=log_clipping,
                          sample_rate=sample_rate, stem_name=str(stem_name))
    path = Path(str(stem_name) + ('.' + format if add_suffix else ''))
    if make_parent_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist; create it or pass "
                                "make_parent_dir=True.")
    with atomic_file(path) as tmp:
        if encoder == 'soundfile':
            _write_soundfile(tmp, wav, sample_rate, format, mp3_rate, ogg_rate)
        else:
            _write_ffmpeg(ffmpeg, tmp, wav, sample_rate, _ffmpeg_flags(format, mp3_rate, ogg_rate))
    return path


def audio_read(path: PathLike, seek_time: float = 0.0, duration: float = -1.0,
               pad: bool = False) -> tp.Tuple[torch.Tensor, int]:
    """Read an audio file with soundfile; returns (wav [C, T] float32 in [-1, 1], sample_rate).

    Reading starts `seek_time` seconds in and lasts `duration` seconds (the whole rest when
    duration <= 0). With pad=True and duration > 0, a short read is zero-padded to
    int(duration * sample_rate) samples.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}; check the path.")
    try:
        with soundfile.SoundFile(str(path)) as f:
            sample_rate = f.samplerate
            f.seek(min(int(seek_time * sample_rate), f.frames))
            frames = int(duration * sample_rate) if duration > 0 else -1
            data = f.read(frames, dtype='float32', always_2d=True)  # [T, C]
    except soundfile.LibsndfileError as err:
        raise ValueError(f"cannot read {path} as audio ({err.error_string}); pass a wav, flac, "
                         "ogg or mp3 file.") from None
    wav = torch.from_numpy(data).t().contiguous()
    if pad and duration > 0:
        length = int(duration * sample_rate)
        if length * wav.shape[0] > MAX_PADDED_SAMPLES:  # the header's rate and channels decide, not the data
            raise ValueError(f"cannot pad {path} to {duration:g} s: its header says {sample_rate} Hz x "
                             f"{wav.shape[0]} channels, {length * wav.shape[0]:,} samples; check the file")
        wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))
    return wav, sample_rate


MAX_PADDED_SAMPLES = 1 << 28  # 1 GiB of float32: 10 s at 10 MHz in stereo fits, a lying header's 2**31 Hz does not


def save_spectrogram(wav: torch.Tensor, sample_rate: int, path: PathLike, title: tp.Optional[str] = None,
                     max_hz: tp.Optional[float] = None, top_db: float = 80.0) -> Path:
    """Write a log-magnitude spectrogram of `wav` ([C, T] or [T], channels averaged) as a PNG image
    (time left to right, frequency upwards, `top_db` of range below the peak), atomically.
    Needs matplotlib (the `app` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wav = wav.detach().float().cpu()
    mono = wav.reshape(-1, wav.shape[-1]).mean(0) if wav.dim() > 1 else wav
    n_fft, hop = 1024, 256
    spec = torch.stft(mono, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-6))
    db = db.clamp_min(db.max() - top_db)
    nyquist = sample_rate / 2
    max_hz = min(max_hz or nyquist, nyquist)
    db = db[: int(db.shape[0] * max_hz / nyquist) + 1]
    seconds = mono.shape[-1] / sample_rate
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=100)
    try:
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, max_hz / 1000))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("kHz")
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        path = Path(path)
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
