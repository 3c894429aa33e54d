"""demo-data: valid single- and multi-speaker corpora, voice specs, determinism."""

from __future__ import annotations

import pytest
import soundfile as sf

from voicetrain.data.demo import (HELD_OUT, PRESETS, DemoError, choose_prompts, expand_voices, load_prompts,
                                  make_demo_corpus, parse_voice)
from voicetrain.data.formats import read_corpus


def test_single_voice_corpus_is_ljspeech(demo_corpus_dir):
    lines = (demo_corpus_dir / "metadata.csv").read_text().splitlines()
    assert len(lines) == 12
    for line in lines:
        uid, text, norm = line.split("|")
        assert text == norm and text
        info = sf.info(str(demo_corpus_dir / "wavs" / f"{uid}.wav"))
        assert info.samplerate == 16000 and info.frames > 16000
    c = read_corpus(demo_corpus_dir)
    assert c.format == "ljspeech" and len(c.items) == 12 and not any(it.issues for it in c.items)


def test_multi_speaker_corpus_is_vctk_like(tmp_path):
    out = tmp_path / "multi"
    r = make_demo_corpus(out, ["multi"], utterances=2, seed=3)
    assert r.layout == "vctk" and len(r.speakers) >= 8 and "flite_slt" not in r.speakers
    c = read_corpus(out)
    assert c.format == "vctk" and len(c.items) == 2 * len(r.speakers)
    assert {it.speaker for it in c.items} == set(r.speakers)
    assert not any(it.issues for it in c.items)
    # same arguments: nothing to redo; other arguments on the same folder: refused
    assert make_demo_corpus(out, ["multi"], utterances=2, seed=3).n_synthesized == 0
    with pytest.raises(DemoError, match="holds a demo corpus"):
        make_demo_corpus(out, ["multi"], utterances=2, seed=4)


def test_voice_specs_and_presets():
    v = parse_voice("espeak:en-us+f2:p60:s150")
    assert (v.engine, v.voice, v.pitch, v.speed, v.name) == ("espeak", "en-us+f2", 60, 150, "espeak_en-us_f2_p60_s150")
    assert parse_voice("flite:rms").command("Hi.", "o.wav")[0][:3] == ["flite", "-voice", "rms"]
    for bad in ("rms", "festival:", "espeak:en:x9", "flite:rms:p50", "festival:kal_diphone:s120", "flite:rms@x",
                "flite:rms@+0", "flite:rms@+5000"):
        with pytest.raises(DemoError):
            parse_voice(bad)
    # every slt voice stays out of every preset, shifted copies included
    assert not [s for specs in PRESETS.values() for s in specs if "slt" in s]
    shifted = parse_voice("festival:ked_diphone@-300")
    assert (shifted.shift_cents, shifted.spec) == (-300, "festival:ked_diphone@-300")
    assert shifted.name != parse_voice("festival:ked_diphone").name
    assert parse_voice("festival:kal_diphone").command("Hi.", "o.wav") == (
        ["text2wave", "-eval", "(voice_kal_diphone)", "-o", "o.wav"], "Hi.")
    assert [v.spec for v in expand_voices(["flite:rms,flite:slt"])] == ["flite:rms", HELD_OUT]
    assert len(expand_voices(["multi"])) >= 8
    # the base model's corpus: distinct English voices, without the demo voice (rms) it is fine-tuned to
    base = expand_voices(["base"])
    assert len(base) >= 20 and len({v.name for v in base}) == len(base)
    assert not [v for v in base if v.voice == "rms" or v.engine == "festival" and v.voice not in ("kal_diphone", "ked_diphone")]


def test_prompt_choice_is_deterministic_by_seed():
    prompts = load_prompts()
    assert len(prompts) == 1132
    v = parse_voice("flite:rms")
    assert choose_prompts(prompts, 20, 0, v) == choose_prompts(prompts, 20, 0, v)
    assert choose_prompts(prompts, 20, 0, v) != choose_prompts(prompts, 20, 1, v)


def test_festival_voice_and_a_pitch_shifted_copy(tmp_path):
    """A festival voice speaks, and its sox-shifted copy is a different speaker with a higher F0."""
    import numpy as np

    from voicetrain.audio.features import f0_yin
    from voicetrain.audio.io import resample
    from voicetrain.config import AudioConfig

    out = tmp_path / "fest"
    r = make_demo_corpus(out, ["festival:kal_diphone,festival:kal_diphone@+700"], utterances=2, seed=0)
    assert r.layout == "vctk" and len(r.speakers) == 2
    c = read_corpus(out)
    assert len(c.items) == 4 and not any(it.issues for it in c.items)

    def median_f0(speaker):
        cfg = AudioConfig()
        vals = []
        for it in c.items:
            if it.speaker == speaker:
                x, sr = sf.read(str(it.audio), dtype="float32")
                f0 = f0_yin(resample(x, sr, cfg.sample_rate), cfg)
                vals += list(f0[f0 > 0])
        return float(np.median(vals))

    base, up = median_f0(r.speakers[0]), median_f0(r.speakers[1])
    if "shiftup" in r.speakers[0]:
        base, up = up, base
    assert up > base * 1.3  # +700 cents is x1.5 in F0
