"""The clip-spec sampler and captions of `openmagnet data synth` (openmagnet/data/compose.py), no rendering."""
from collections import Counter

import pytest

from openmagnet.data.compose import FAMILIES, STYLES, TONICS, _TEMPO_WORDS, compose, sample_spec
from tests.data.conftest import SHORT


def _mentions_instrument(spec) -> bool:
    return any(part.name in spec.description.lower() for part in spec.parts)


def _mentions_key_or_tempo(spec) -> bool:
    text, tonic = spec.description.lower(), TONICS[spec.tonic]
    words = _TEMPO_WORDS[spec.tempo_feel]
    return (f"{tonic} {spec.mode}" in text or f"{spec.mode} key" in text or f"{spec.bpm} bpm" in text
            or any(w in text for w in words))


def test_spec_sampler_covers_families_modes_and_styles():
    specs = [sample_spec(seed=0, index=i) for i in range(2000)]
    assert {f for s in specs for f in s.families} == set(FAMILIES)
    assert {s.mode for s in specs} == {'major', 'minor'}
    assert {s.tonic for s in specs} == set(range(12))
    assert {s.style for s in specs} == set(STYLES)
    assert Counter(len(s.parts) for s in specs).keys() == {1, 2, 3, 4}
    assert all(60 <= s.bpm <= 180 and 10 <= s.seconds <= 12 for s in specs)
    assert {r for s in specs for p in s.parts for r in p.roles} == {'melody', 'chords', 'arpeggio', 'bass', 'drums'}
    assert all(p.family != 'drums' or p.roles == ('drums',) for s in specs for p in s.parts)
    assert len({s.description for s in specs}) > 1900  # varied captions


def test_spec_is_deterministic_per_seed_and_index():
    assert sample_spec(7, 3) == sample_spec(7, 3)
    assert sample_spec(7, 3) != sample_spec(8, 3)
    assert sample_spec(7, 3) != sample_spec(7, 4)
    assert sample_spec(7, 3, stream='holdout') != sample_spec(7, 3)
    with pytest.raises(ValueError, match="clip seconds"):
        sample_spec(0, 0, (5.0, 2.0))


def test_descriptions_name_a_real_instrument_and_the_key_or_tempo():
    for i in range(500):
        spec = sample_spec(1, i)
        assert _mentions_instrument(spec), spec.description
        assert _mentions_key_or_tempo(spec), spec.description


def test_composed_midi_matches_the_spec():
    pytest.importorskip('pretty_midi')
    for i in range(20):
        spec = sample_spec(2, i, SHORT)
        midi = compose(spec)
        assert [(inst.program, inst.is_drum) for inst in midi.instruments] == \
               [(p.program, p.family == 'drums') for p in spec.parts]
        assert all(inst.notes for inst in midi.instruments)
        pairs = zip(midi.instruments, spec.parts, strict=True)
        named = [inst for inst, part in pairs if part.name in spec.description.lower()]
        assert named and named[0].notes  # the instrument the caption names is really playing


def test_wide_tempo_spreads_every_style_over_60_to_180_bpm():
    """tempo='wide' draws the bpm apart from the genre: slow and very fast clips of the same style both
    exist, and captions still tell the tempo."""
    specs = [sample_spec(0, i, tempo='wide') for i in range(3000)]
    assert all(60 <= s.bpm <= 180 for s in specs)
    for style in STYLES:
        bpms = [s.bpm for s in specs if s.style == style]
        assert min(bpms) < 76 and max(bpms) >= 160, (style, min(bpms), max(bpms))
    assert all(_mentions_key_or_tempo(s) for s in specs[:500])
    assert Counter(s.tempo_feel for s in specs).keys() == {'slow', 'moderate', 'fast', 'very fast'}
    with pytest.raises(ValueError, match="tempo must be one of style, wide, got 'fast'"):
        sample_spec(0, 0, tempo='fast')


def test_drums_always_puts_a_beat_at_the_clip_tempo_in_every_clip():
    """drums='always': every clip has a drum part (the genres without a kit included), whose kicks fall on a
    grid of whole beats at the clip's bpm; the default draws exactly the specs it drew before the option."""
    specs = [sample_spec(3, i, tempo='wide', drums='always') for i in range(400)]
    assert all(any(p.family == 'drums' for p in s.parts) for s in specs)
    assert all(2 <= len(s.parts) <= 4 for s in specs)
    kitless = [s for s in specs if not STYLES[s.style].kits]
    assert kitless
    spec = kitless[0]
    drums = next(i for i in compose(spec).instruments if i.is_drum)
    beat = 60.0 / spec.bpm
    kicks = sorted(n.start for n in drums.notes if n.pitch == 36)
    assert len(kicks) >= 4
    assert all(abs(k / beat - round(k / beat)) < 1e-3 for k in kicks)
    assert [sample_spec(3, i, tempo='wide', drums='style') for i in range(50)] == \
        [sample_spec(3, i, tempo='wide') for i in range(50)]
    assert sum(any(p.family == 'drums' for p in sample_spec(3, i).parts) for i in range(400)) < 300
    with pytest.raises(ValueError, match="drums must be one of style, always, got 'never'"):
        sample_spec(0, 0, drums='never')
