"""Tests for openmagnet.audio: normalisation strategies, file round trips, encoder selection,
error messages and resampling (SPEC §1.4)."""
import logging
import math
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from openmagnet import audio

SR = 32000


def tone(seconds=3.0, sr=SR, amp=0.3, noise=0.05, channels=1, seed=0):
    """440 Hz tone plus white noise, [C, T]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    wav = amp * torch.sin(2 * math.pi * 440 * t) + noise * torch.randn(len(t), generator=g)
    return torch.stack([wav * (1 - 0.3 * c) for c in range(channels)])


def leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith('.tmp')]


# --------------------------------------------------------------------------- import budget

def test_import_loads_no_heavy_deps():
    heavy = ('soundfile', 'pyloudnorm', 'julius', 'scipy')
    code = f"import sys, openmagnet.audio; print(sorted(set({heavy!r}) & set(sys.modules)))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


# --------------------------------------------------------------------------- normalisation

def test_peak_sets_max_to_headroom():
    out = audio.normalize_audio(tone(channels=2) * 3, strategy='peak')
    assert out.abs().max().item() == pytest.approx(10 ** (-1 / 20), rel=1e-6)


def test_peak_without_normalize_only_scales_down():
    quiet = tone(amp=0.1, noise=0.0)
    assert torch.equal(audio.normalize_audio(quiet, normalize=False, strategy='peak'), quiet)
    loud = audio.normalize_audio(quiet * 20, normalize=False, strategy='peak')
    assert loud.abs().max().item() == pytest.approx(10 ** (-1 / 20), rel=1e-6)


def test_clip_bounds_to_headroom():
    wav = tone(amp=2.0)
    out = audio.normalize_audio(wav, strategy='clip')
    bound = 10 ** (-1 / 20)
    assert out.abs().max().item() == pytest.approx(bound, rel=1e-6)
    inside = wav.abs() < bound
    assert torch.equal(out[inside], wav[inside])


def test_rms_sets_channel_mean_level():
    out = audio.normalize_audio(tone(channels=2), strategy='rms')
    rms = out.mean(dim=0).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(10 ** (-18 / 20), rel=1e-5)


def test_rms_clamps_and_logs_clipping(caplog):
    wav = tone(noise=0.0)
    wav[0, 100] = 50.0  # one spike far above the rms target's headroom
    with caplog.at_level(logging.WARNING, logger='openmagnet.audio'):
        out = audio.normalize_audio(wav, strategy='rms', rms_headroom_db=0, log_clipping=True,
                                    stem_name='spiky')
    assert out.abs().max().item() == 1.0
    assert any('clipping spiky' in r.getMessage() for r in caplog.records)


def test_loudness_hits_target_measured_independently():
    import pyloudnorm

    out = audio.normalize_audio(tone(), strategy='loudness', sample_rate=SR)
    measured = pyloudnorm.Meter(SR).integrated_loudness(out[0].double().numpy())
    assert measured == pytest.approx(-14.0, abs=0.1)
    louder = audio.normalize_audio(tone(), strategy='loudness', sample_rate=SR,
                                   loudness_headroom_db=10)
    measured = pyloudnorm.Meter(SR).integrated_loudness(louder[0].double().numpy())
    assert measured == pytest.approx(-10.0, abs=0.1)


def test_loudness_compressor_stays_below_one():
    out = audio.normalize_audio(tone(amp=0.9, noise=0.2), strategy='loudness', sample_rate=SR,
                                loudness_headroom_db=0, loudness_compressor=True)
    assert out.abs().max().item() < 1.0
    hard = audio.normalize_audio(tone(amp=0.9, noise=0.2), strategy='loudness', sample_rate=SR,
                                 loudness_headroom_db=0)
    assert hard.abs().max().item() == 1.0  # without the compressor, clamped


@pytest.mark.parametrize('strategy', ['loudness', 'peak', 'rms'])
def test_silent_input_unchanged(strategy):
    silent = torch.zeros(1, SR)
    out = audio.normalize_audio(silent, strategy=strategy, sample_rate=SR)
    assert torch.equal(out, silent)
    below_floor = tone(amp=1e-3, noise=0.0)  # rms ~7e-4 < 2e-3
    assert torch.equal(audio.normalize_audio(below_floor, strategy='loudness', sample_rate=SR),
                       below_floor)


def test_normalize_does_not_modify_input():
    wav = tone(amp=3.0)
    before = wav.clone()
    for strategy in ('peak', 'clip', 'rms'):
        audio.normalize_audio(wav, strategy=strategy, normalize=False)
    audio.normalize_audio(wav, strategy='loudness', sample_rate=SR)
    assert torch.equal(wav, before)


def test_none_strategy_passes_through_and_rejects_clipping():
    wav = tone()
    assert torch.equal(audio.normalize_audio(wav, strategy='none'), wav)
    assert torch.equal(audio.normalize_audio(wav, strategy=''), wav)
    with pytest.raises(ValueError, match=r"strategy='none' needs audio inside \(-1, 1\)"):
        audio.normalize_audio(wav * 10, strategy='none')


def test_normalize_errors():
    with pytest.raises(ValueError, match="unknown normalisation strategy 'loud'"):
        audio.normalize_audio(tone(), strategy='loud')
    with pytest.raises(ValueError, match="strategy='loudness' needs the sample_rate"):
        audio.normalize_audio(tone(), strategy='loudness')
    with pytest.raises(ValueError, match='loudness needs at least 0.4 s of audio'):
        audio.normalize_audio(tone(seconds=0.1), strategy='loudness', sample_rate=SR)


# --------------------------------------------------------------------------- write / read

@pytest.mark.parametrize('fmt', ['wav', 'flac'])
def test_pcm_round_trip(tmp_path, fmt):
    wav = tone(seconds=0.5, channels=2)
    path = audio.audio_write(tmp_path / 'x', wav, SR, format=fmt)
    assert path == tmp_path / f'x.{fmt}'
    back, sr = audio.audio_read(path)
    assert sr == SR and back.dtype == torch.float32 and back.shape == wav.shape
    expected = audio.normalize_audio(wav, strategy='peak')
    assert (back - expected).abs().max().item() <= 0.5 / 32768 + 1e-7  # 16-bit rounding
    assert leftovers(tmp_path) == []


def test_pcm_quantisation_matches_ffmpeg_rule(tmp_path):
    values = torch.tensor([[0.0, 0.5, -0.5, 1.0, -1.0, 1 / 32768, 1.6 / 32768]])
    import soundfile

    path = audio.audio_write(tmp_path / 'q', values, SR, strategy='clip', peak_clip_headroom_db=0)
    ints, _ = soundfile.read(str(path), dtype='int16')
    assert ints.tolist() == [0, 16384, -16384, 32767, -32768, 1, 2]


def test_mono_1d_input_and_read_window(tmp_path):
    wav = tone(seconds=1.0)[0]
    path = audio.audio_write(tmp_path / 'mono', wav, SR)
    full, _ = audio.audio_read(path)
    assert full.shape == (1, SR)
    part, _ = audio.audio_read(path, seek_time=0.25, duration=0.5)
    assert part.shape == (1, SR // 2)
    assert torch.equal(part, full[:, SR // 4: SR // 4 + SR // 2])
    tail, _ = audio.audio_read(path, seek_time=0.75, duration=0.5, pad=True)
    assert tail.shape == (1, SR // 2) and torch.equal(tail[:, SR // 4:], torch.zeros(1, SR // 4))


def test_suffix_and_parent_dir(tmp_path):
    wav = tone(seconds=0.1)
    nested = audio.audio_write(tmp_path / 'a' / 'b' / 'song', wav, SR)
    assert nested == tmp_path / 'a' / 'b' / 'song.wav' and nested.is_file()
    bare = audio.audio_write(tmp_path / 'exact.name', wav, SR, add_suffix=False)
    assert bare == tmp_path / 'exact.name' and bare.is_file()
    assert audio.audio_read(bare)[0].shape == wav.shape
    with pytest.raises(FileNotFoundError, match='does not exist; create it or pass make_parent'):
        audio.audio_write(tmp_path / 'missing' / 'song', wav, SR, make_parent_dir=False)
    assert not (tmp_path / 'missing').exists()


def test_overwrite_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    wav = tone(seconds=0.1)
    path = audio.audio_write(tmp_path / 'song', wav, SR)
    original = path.read_bytes()

    def interrupted(tmp, *args, **kwargs):
        tmp.write_bytes(b'half written')
        raise KeyboardInterrupt

    monkeypatch.setattr(audio, '_write_soundfile', interrupted)
    with pytest.raises(KeyboardInterrupt):
        audio.audio_write(tmp_path / 'song', wav * 0.5, SR)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ['song.wav']


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match=r'^wav contains NaN or infinite values; check the model '
                                         r'output before writing it\.$'):
        audio.audio_write(tmp_path / 'x', torch.tensor([0.1, float('nan')]), SR)
    message = ('wav must have shape [C, T] or [T], got (1, 1, 4); '
               'write batched audio one item at a time.')
    with pytest.raises(ValueError, match=re.escape(message)):
        audio.audio_write(tmp_path / 'x', torch.zeros(1, 1, 4), SR)
    with pytest.raises(ValueError, match=re.escape(
            "unsupported audio format 'aac'; use one of 'wav', 'flac', 'mp3' or 'ogg'.")):
        audio.audio_write(tmp_path / 'x', torch.zeros(1, 4), SR, format='aac')
    with pytest.raises(TypeError, match='wav must be a floating point tensor, got torch.int16'):
        audio.audio_write(tmp_path / 'x', torch.zeros(1, 4, dtype=torch.int16), SR)
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no audio file at .*nope.wav; check the path.'):
        audio.audio_read(tmp_path / 'nope.wav')
    junk = tmp_path / 'junk.wav'
    junk.write_text('this is not audio')
    with pytest.raises(ValueError, match=r'cannot read .*junk.wav as audio \(.*\); pass a wav'):
        audio.audio_read(junk)


# --------------------------------------------------------------------------- mp3 / ogg backends

@pytest.mark.parametrize('fmt', ['mp3', 'ogg'])
def test_compressed_via_soundfile(tmp_path, fmt):
    if not audio._soundfile_supports(fmt):
        pytest.skip(f'this libsndfile cannot encode {fmt}')
    wav = tone(seconds=1.0, channels=2)
    path = audio.audio_write(tmp_path / 'c', wav, SR, format=fmt)
    assert path == tmp_path / f'c.{fmt}'
    back, sr = audio.audio_read(path)
    assert sr == SR and back.shape[0] == 2 and abs(back.shape[1] - SR) < 0.05 * SR
    assert 0.5 < back.abs().max().item() < 1.1
    assert leftovers(tmp_path) == []


def test_mp3_bitrate_follows_mp3_rate(tmp_path):
    if not audio._soundfile_supports('mp3'):
        pytest.skip('this libsndfile cannot encode mp3')
    wav = tone(seconds=2.0)
    high = audio.audio_write(tmp_path / 'high', wav, SR, format='mp3', mp3_rate=320)
    low = audio.audio_write(tmp_path / 'low', wav, SR, format='mp3', mp3_rate=64)
    assert high.stat().st_size / 2 * 8 / 1000 == pytest.approx(320, rel=0.1)  # kbps
    assert low.stat().st_size / 2 * 8 / 1000 == pytest.approx(64, rel=0.1)


@pytest.mark.parametrize('fmt', ['mp3', 'ogg'])
def test_compressed_without_any_encoder_raises(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(audio, '_soundfile_supports', lambda format: False)
    monkeypatch.setattr(audio.shutil, 'which', lambda name: None)
    with pytest.raises(ValueError, match=re.escape(
            f"cannot write {fmt}: this libsndfile has no {fmt} encoder and ffmpeg is not on PATH; "
            "install ffmpeg or use format='wav' or 'flac'.")):
        audio.audio_write(tmp_path / 'c', tone(seconds=0.1), SR, format=fmt)
    assert list(tmp_path.iterdir()) == []


FAKE_FFMPEG = '''\
    #!{python}
    import json, sys
    args = sys.argv[1:]
    data = sys.stdin.buffer.read()
    with open(args[-1], 'wb') as f:
        f.write(b'encoded')
    with open({log!r}, 'w') as f:
        json.dump({{'args': args, 'nbytes': len(data)}}, f)
'''


@pytest.mark.parametrize('fmt, extra, flags', [
    ('mp3', {'mp3_rate': 128}, ['-f', 'mp3', '-c:a', 'libmp3lame', '-b:a', '128k']),
    ('ogg', {}, ['-f', 'ogg', '-c:a', 'libvorbis']),
    ('ogg', {'ogg_rate': 96}, ['-f', 'ogg', '-c:a', 'libvorbis', '-b:a', '96k']),
])
def test_compressed_falls_back_to_ffmpeg(tmp_path, monkeypatch, fmt, extra, flags):
    import json

    log = tmp_path / 'ffmpeg.json'
    fake = tmp_path / 'bin' / 'ffmpeg'
    fake.parent.mkdir()
    fake.write_text(textwrap.dedent(FAKE_FFMPEG.format(python=sys.executable, log=str(log))))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(audio, '_soundfile_supports', lambda format: False)
    monkeypatch.setattr(audio.shutil, 'which', lambda name: str(fake) if name == 'ffmpeg' else None)
    out_dir = tmp_path / 'out'
    path = audio.audio_write(out_dir / 'c', tone(seconds=0.1, channels=2), SR, format=fmt, **extra)
    assert path == out_dir / f'c.{fmt}' and path.read_bytes() == b'encoded'
    call = json.loads(log.read_text())
    assert call['args'][:10] == ['-loglevel', 'error', '-y', '-f', 'f32le', '-ar', str(SR),
                                 '-ac', '2', '-i'] and call['args'][10] == '-'
    assert call['args'][11:-1] == flags
    assert call['nbytes'] == 2 * int(0.1 * SR) * 4  # interleaved float32
    assert os.listdir(out_dir) == [f'c.{fmt}']


# --------------------------------------------------------------------------- convert_audio

def test_convert_audio_downmix_and_channels():
    wav = torch.randn(2, 3, 100)  # [B, C, T]
    mono = audio.convert_audio(wav, SR, SR, 1)
    assert torch.allclose(mono, wav.mean(dim=-2, keepdim=True))
    assert torch.equal(audio.convert_audio(wav, SR, SR, 2), wav[:, :2])
    up = audio.convert_audio(wav[:, :1], SR, SR, 2)
    assert up.shape == (2, 2, 100) and torch.equal(up[:, 0], up[:, 1])
    with pytest.raises(ValueError, match='cannot make 4 channels from 3'):
        audio.convert_audio(wav, SR, SR, 4)


def test_convert_audio_resample_length():
    wav = tone(seconds=1.0, sr=44100, noise=0.0, channels=2)
    out = audio.convert_audio(wav, 44100, 32000, 1)
    assert out.shape == (1, 32000)
    # a 440 Hz tone survives resampling: compare with the tone generated at 32 kHz
    ref = tone(seconds=1.0, sr=32000, noise=0.0, channels=2).mean(dim=0, keepdim=True)
    assert (out - ref)[:, 200:-200].abs().max().item() < 1e-3
    assert audio.convert_audio(wav, 44100.0, 16000.0, 2).shape == (2, 16000)


class MPSLike(torch.Tensor):
    """Stands in for an MPS tensor, which has no float64: any op on it that gives float64 raises;
    `.cpu()` gives a plain CPU tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        out = super().__torch_function__(func, types, args, kwargs or {})
        if isinstance(out, torch.Tensor) and out.dtype == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64")
        return out


def test_write_moves_to_cpu_before_any_dtype_change(tmp_path):
    wav = tone().as_subclass(MPSLike)
    with pytest.raises(TypeError, match='float64'):
        wav.double()  # the stand-in refuses what MPS refuses
    path = audio.audio_write(tmp_path / 'x', wav, SR, strategy='loudness', loudness_compressor=True)
    back, sr = audio.audio_read(path)
    assert sr == SR and back.shape == (1, 3 * SR) and type(back) is torch.Tensor
    ref = audio.audio_write(tmp_path / 'ref', tone(), SR, strategy='loudness', loudness_compressor=True)
    assert path.read_bytes() == ref.read_bytes()  # the same file as from a plain CPU tensor


# --------------------------------------------------------------------------- DC removal

def _music(seconds, sr=16000):
    """A bass line, a chord and a melody (41.2 Hz E1 up to 2.6 kHz), [1, T]: what remove_dc must keep."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    notes = [(41.2, 0.25), (55.0, 0.1), (110.0, 0.2), (261.6, 0.1), (329.6, 0.1), (392.0, 0.1), (2637.0, 0.05)]
    return sum(a * torch.sin(2 * math.pi * f * t + f) for f, a in notes)[None]


def test_remove_dc_takes_the_offset_and_drift_and_keeps_the_music():
    """A DC offset and a drift below 5 Hz (the demo codec's fault) go; everything from a bass's E1 up stays, at the
    ends of the clip too (no edge transient)."""
    sr = 16000
    music = _music(4.0, sr)
    t = torch.arange(music.shape[-1], dtype=torch.float64) / sr
    offset = 0.4 + 0.15 * torch.sin(2 * math.pi * 0.7 * t) + 0.05 * torch.sin(2 * math.pi * 3.1 * t)
    out = audio.remove_dc(music + offset, sr)
    assert out.shape == music.shape and out.dtype == torch.float64
    assert abs(out.mean().item()) < 1e-3
    body = slice(1600, -1600)  # all but the first and last 0.1 s: the response at 41-55 Hz (-0.03 dB) is all
    assert (out - music)[..., body].abs().max() < 2e-3
    assert (out - music).abs().max() < 0.07  # the ends: a low bump of a few hundredths under this loud E1 bass
    # the response, on pure tones: -6 dB at the 10 Hz corner, within 0.1 dB from 31 Hz up, nothing at DC
    for hz, low, high in [(10.0, 0.45, 0.55), (31.0, 0.988, 1.0), (41.2, 0.996, 1.0), (1000.0, 0.99999, 1.0)]:
        sine = torch.sin(2 * math.pi * hz * torch.arange(10 * sr, dtype=torch.float64) / sr)[None]
        middle = slice(2 * sr, 8 * sr)
        gain = audio.remove_dc(sine, sr)[..., middle].std() / sine[..., middle].std()
        assert low <= gain <= high, (hz, gain)
    float32 = audio.remove_dc((music + offset).float(), sr)
    assert float32.dtype == torch.float32 and torch.allclose(float32.double(), out, atol=1e-5)


def test_remove_dc_periodic_keeps_a_loop_seamless():
    """periodic=True treats the clip as one period of a loop: a whole number of cycles over an offset comes back as
    the cycles alone, so the wrap from the last sample to the first stays as smooth as the rest."""
    sr, n = 16000, 16000
    t = torch.arange(n, dtype=torch.float64) / sr
    loop = 0.3 * torch.sin(2 * math.pi * 55 * t) + 0.1 * torch.sin(2 * math.pi * 220 * t)
    out = audio.remove_dc(loop[None] + 0.5, sr, periodic=True)
    response = [1 / (1 + (10 / hz) ** 4) for hz in (55, 220)]  # whole cycles fall on FFT bins: exactly this
    expected = (0.3 * response[0] * torch.sin(2 * math.pi * 55 * t)
                + 0.1 * response[1] * torch.sin(2 * math.pi * 220 * t))
    assert torch.allclose(out[0], expected, atol=1e-9)
    assert audio.remove_dc(torch.tensor([[0.5]]), sr).item() == 0.0  # one sample: its mean
    batch = torch.stack([loop[None] + 0.2, loop[None] - 0.3])  # [B, C, T]
    assert torch.allclose(audio.remove_dc(batch, sr, periodic=True), torch.stack([expected[None]] * 2), atol=1e-9)
