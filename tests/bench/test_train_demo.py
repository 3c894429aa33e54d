"""bench/train_demo.py: the variant parser, the vocoder's copy of the real mels, the targets and --rescore's check."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("bench_train_demo", BENCH / "train_demo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


train_demo = _load()


def test_variant_keeps_commas_inside_brackets():
    name, sets = train_demo.parse_variant("drop:model_config.dropout_ramp_steps=[600,1800],optim.lr=0.005")
    assert name == "drop"
    assert sets == ["model_config.dropout_ramp_steps=[600,1800]", "optim.lr=0.005"]
    assert train_demo.parse_variant("bs8:") == ("bs8", [])
    assert train_demo.parse_variant("plain") == ("plain", [])


def test_vocoder_copy_resamples_and_speaks_through_the_given_vocoder():
    from voicetrain.config import AudioConfig
    from voicetrain.vocoders.griffin_lim import GriffinLim

    cfg = AudioConfig()
    sr = 16000 if cfg.sample_rate != 16000 else 24000  # a recording at another rate than the voice's
    t = np.arange(int(0.5 * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav, out_sr = train_demo.vocoder_copy(audio, sr, cfg, GriffinLim(cfg, n_iter=2))
    assert out_sr == cfg.sample_rate
    assert abs(len(wav) - 0.5 * cfg.sample_rate) <= 2 * cfg.hop_length
    assert np.abs(wav).max() > 0.01  # a tone, not silence


def _line(cer_3: float, cer_15: float) -> dict:
    curve = [{"minutes": 3.0, "cer_whisper_ratio_to_real": cer_3, "speaker_similarity": 0.85},
             {"minutes": 15.0, "cer_whisper_ratio_to_real": cer_15, "speaker_similarity": 0.86}]
    return {"curve": curve, "samples_per_s_whole_run": None, "peak_rss_mb": 900.0, "run_mb": 100.0}


def test_targets_say_whether_the_vocoders_copy_of_the_real_mels_meets_the_bars():
    t = train_demo.targets(_line(1.1, 1.5), gl_sim=0.855, copy_ratio=1.15)
    assert t["copy_of_real_within_1.2x_real"] is True
    assert t["copy_of_real_within_1.05x_real"] is False
    assert t["cer_at_3min_le_1.2x_real"] is True and t["cer_at_15min_le_1.05x_real"] is False
    assert t["samples_per_s_ge_60"] is None  # a rescored run does not know its whole process's time
    assert "copy_of_real_within_1.2x_real" not in train_demo.targets(_line(1.1, 1.5), gl_sim=0.855)


def test_snapshots_are_read_from_their_file_names(tmp_path):
    run = tmp_path / "run-fastspeech2"
    (run / "checkpoints").mkdir(parents=True)
    assert train_demo.snapshots(run) == []
    (run / "checkpoints" / "time=3min-step=512.ckpt").write_bytes(b"")
    (run / "checkpoints" / "time=1min-step=190.ckpt").write_bytes(b"")
    assert [(m, s) for m, s, _ in train_demo.snapshots(run)] == [(1.0, 190), (3.0, 512)]


def test_rescore_without_snapshots_names_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(train_demo, "ensure_dataset", lambda work, n, voice: tmp_path / "ds")
    monkeypatch.setattr(train_demo, "real_recordings", lambda work, sentences, voice: {})
    with pytest.raises(SystemExit, match="has no time snapshots"):
        train_demo.main(["--rescore", "--work", str(tmp_path), "--minutes", "3", "--marks", "3"])
