"""Picking the voice by how it sounds: Whisper in the evaluator, the quality score, quality tracking
during training, checkpoint choice by quality, and overfitting judged on quality."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from tests.conftest import tiny_cfg
from voicetrain.evaluation.quality import paired_difference, sentence_quality

SENTENCE = "Glue the sheet to the dark blue background."


@pytest.fixture(scope="module")
def flite_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("whisper") / "glue.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", SENTENCE, "-o", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def evaluator():
    from voicetrain.evaluation.models import Evaluator

    return Evaluator(asr="both")


# ----------------------------------------------------------------------------- Whisper in the evaluator


def test_whisper_transcribes_a_flite_clip_offline(flite_clip, evaluator, monkeypatch):
    from voicetrain.evaluation import metrics

    # nothing may reach the network: the bundled model folder is all faster-whisper gets
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    audio, sr = sf.read(flite_clip, dtype="float32")
    hyp = evaluator.whisper.transcribe(audio, sr)
    assert metrics.error_rates(SENTENCE, hyp).cer == 0.0, hyp
    assert evaluator.whisper.transcribe(np.zeros(16000, np.float32), 16000) == ""  # silence says nothing


def test_whisper_reads_with_one_blas_thread_whatever_the_environment(flite_clip, evaluator, monkeypatch):
    # numpy's BLAS computes Whisper's features; with 2 threads instead of 1 the same recordings read differently
    from threadpoolctl import threadpool_info, threadpool_limits

    whisper = evaluator.whisper
    seen: list[list[int]] = []
    real_transcribe = whisper._model.transcribe

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        segments, info = real_transcribe(*args, **kwargs)

        def lazily():  # faster-whisper decodes while the segments are iterated
            for seg in segments:
                seen.append(blas_threads())
                yield seg
        return lazily(), info

    monkeypatch.setattr(whisper._model, "transcribe", spy)
    audio, sr = sf.read(flite_clip, dtype="float32")
    with threadpool_limits(2, user_api="blas"):  # as an unset OMP_NUM_THREADS leaves it on a 2-core machine
        hyp = whisper.transcribe(audio, sr)
        assert all(n == 2 for n in blas_threads())  # restored after the reading
    assert hyp and len(seen) >= 2 and blas_threads()  # a BLAS is loaded, and both phases were seen
    assert all(n == 1 for phase in seen for n in phase), seen


def test_evaluate_utterance_carries_both_recognizers(flite_clip, evaluator):
    from voicetrain.evaluation.evaluate_audio import evaluate_utterance

    audio, sr = sf.read(flite_clip, dtype="float32")
    timings: dict[str, float] = {}
    row = evaluate_utterance(evaluator, audio, sr, text=SENTENCE, dnsmos=False, timings=timings)
    assert row.asr == "whisper" and row.cer == row.cer_whisper == 0.0
    assert row.cer_pocketsphinx is not None and row.hypothesis_pocketsphinx is not None
    assert set(timings) == {"asr_whisper", "asr_pocketsphinx"}


def test_asr_choice_and_a_bad_model_folder(tmp_path):
    from voicetrain.evaluation.models import ASRUnavailableError, Evaluator

    assert Evaluator(asr="pocketsphinx").asr_names == ("pocketsphinx",)
    assert Evaluator(asr="whisper").asr_names == ("whisper",)
    with pytest.raises(ValueError, match="asr 'vosk'"):
        Evaluator(asr="vosk")
    with pytest.raises(ASRUnavailableError, match=re.escape(str(tmp_path)) + ".*model.bin"):
        Evaluator(asr="whisper", asr_model=str(tmp_path)).whisper  # noqa: B018


def test_eval_audio_cli_asr_flag(flite_clip, tmp_path, capsys):
    from voicetrain.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval-audio", str(flite_clip.parent), "--asr", "kaldi", "--no-dnsmos"])
    assert e.value.code == 1 and "--asr 'kaldi'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the score and its noise


def test_sentence_quality_rule():
    assert sentence_quality(0.1, 0.9) == pytest.approx(0.8)
    assert sentence_quality(3.0, 0.5) == pytest.approx(-0.5)  # CER capped at 1
    assert sentence_quality(0.2, None) == pytest.approx(-0.2)
    assert sentence_quality(None, 0.9) is None


def test_paired_difference_tells_noise_from_a_real_drop():
    base = {f"s{i}": 0.8 + 0.01 * (i % 3) for i in range(8)}
    worse = {k: v - 0.1 for k, v in base.items()}
    d = paired_difference(worse, base)
    assert d.worse_beyond_noise and d.mean == pytest.approx(-0.1)
    jitter = {k: v + (0.05 if i % 2 else -0.05) for i, (k, v) in enumerate(base.items())}
    assert not paired_difference(jitter, base).worse_beyond_noise
    assert paired_difference({"a": 1.0}, {"b": 1.0}) is None


def test_select_checkpoint_by_quality_explains_each_verdict():
    from voicetrain.evaluation.checkpoints import select_checkpoint

    good = {f"val/{i}": 0.80 + 0.01 * (i % 2) for i in range(6)}
    close = {k: v - 0.004 + 0.01 * (1 if i % 2 else -1) for i, (k, v) in enumerate(good.items())}
    bad = {k: v - 0.3 for k, v in good.items()}

    def ck(name, step, values, mcd=5.0):
        vals = list(values.values())
        return {"name": name, "step": step, "quality": float(np.mean(vals)) if vals else None,
                "quality_values": values, "mcd_db": mcd}

    # the later of two checkpoints the sentences cannot tell apart wins
    s = select_checkpoint([ck("a", 100, bad), ck("b", 200, good), ck("c", 300, close)])
    assert s["selected"] == "c" and s["ranking"] == ["c", "b", "a"]
    verdict = {v["name"]: v["verdict"] for v in s["verdicts"]}
    assert verdict == {"c": "selected, within noise of the highest", "a": "worse beyond noise than the highest",
                       "b": "highest score, but the later c is within noise of it"}
    # a later checkpoint worse beyond noise does not win
    s = select_checkpoint([ck("a", 100, close), ck("b", 200, good), ck("c", 300, bad)])
    assert s["selected"] == "b" and {v["name"]: v["verdict"] for v in s["verdicts"]}["a"] == \
        "within noise, but earlier than the selected"
    # without any CER: MCD-DTW decides
    s = select_checkpoint([ck("a", 100, {}, mcd=6.0), ck("b", 200, {}, mcd=5.0)])
    assert s["selected"] == "b" and "MCD" in s["rule"]


# ----------------------------------------------------------------------------- checkpoint choice


def test_choose_checkpoint_prefers_quality_over_validation_loss(tmp_path):
    from voicetrain.inference.checkpoint import choose_checkpoint

    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    for name in ("quality-step=400-score=0.8350.ckpt", "best-step=100.ckpt", "step=400.ckpt", "last.ckpt"):
        (ck / name).write_bytes(b"")
    c = choose_checkpoint(tmp_path / "run")
    assert c.path.name == "quality-step=400-score=0.8350.ckpt" and "quality" in c.reason and "0.8350" in c.reason
    (tmp_path / "run" / "selected_checkpoint.txt").write_text("step=400.ckpt\n")
    assert choose_checkpoint(tmp_path / "run").path.name == "step=400.ckpt"
    (tmp_path / "run" / "selected_checkpoint.txt").unlink()
    for p in ck.glob("quality-*"):
        p.unlink()
    c = choose_checkpoint(tmp_path / "run")
    assert c.path.name == "best-step=100.ckpt" and "validation loss" in c.reason


# ----------------------------------------------------------------------------- tracking during training


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory, prepared_demo_dataset) -> tuple[Path, str]:
    import torch

    from voicetrain.training.train import train

    run = tmp_path_factory.mktemp("quality") / "run"
    buf = io.StringIO()
    threads = torch.get_num_threads()
    try:
        result = train(prepared_demo_dataset, run, tiny_cfg(quality_sentences=2), console=Console(file=buf, width=200))
    finally:
        torch.set_num_threads(threads)
    assert result.extra["quality"]["validations_scored"] == 2
    return run, buf.getvalue()


def test_training_logs_quality_and_keeps_checkpoints_by_it(quality_run):
    from voicetrain.evaluation.history import read_metrics_csv

    run, _ = quality_run
    rows = [r for r in read_metrics_csv(run / "metrics.csv") if "quality/score" in r]
    assert [int(r["step"]) for r in rows] == [6, 12]
    for r in rows:
        assert 0.0 <= r["quality/cer"] <= 10 and -1.0 <= r["quality/speaker_similarity"] <= 1.0
        # mean(sim - min(cer, 1)) >= mean(sim) - min(mean(cer), 1): min(., 1) is concave
        assert r["quality/score"] >= r["quality/speaker_similarity"] - min(r["quality/cer"], 1.0) - 1e-5
        assert r["quality/real_score"] > r["quality/score"]  # 12 steps are far from the real recordings
    kept = sorted(p.name for p in (run / "checkpoints").glob("quality-step=*-score=*.ckpt"))
    assert len(kept) == 1  # the voice: the latest validation within noise of the best
    assert list((run / "tb").glob("events.*")), "TensorBoard events"
    assert list((run / "checkpoints").glob("best-step=*.ckpt")), "the lowest validation loss stays on disk"


def test_synth_picks_the_quality_best_checkpoint_and_names_it(quality_run, tmp_path):
    from typer.testing import CliRunner

    from voicetrain.cli import app
    from voicetrain.inference.checkpoint import quality_score_of

    run, _ = quality_run
    [best] = (run / "checkpoints").glob("quality-*.ckpt")
    assert quality_score_of(best) is not None
    r = CliRunner().invoke(app, ["synth", str(run), "--text", "Hello there.", "--out", str(tmp_path / "a.wav"),
                                 "--gl-iters", "4"])
    assert r.exit_code == 0, r.output
    assert best.name in r.output and "chosen by quality" in r.output
    assert sf.info(tmp_path / "a.wav").frames > 0


def test_training_without_the_judges_falls_back_to_validation_loss(prepared_demo_dataset, tmp_path, monkeypatch):
    import torch

    from voicetrain.training import quality
    from voicetrain.training.train import train

    monkeypatch.setattr(quality, "judges_missing", lambda: "faster-whisper")
    buf = io.StringIO()
    threads = torch.get_num_threads()
    try:
        train(prepared_demo_dataset, tmp_path / "run", tiny_cfg(quality_sentences=2, max_steps=6),
              console=Console(file=buf, width=200))
    finally:
        torch.set_num_threads(threads)
    text = buf.getvalue()
    assert text.count("quality tracking off") == 1 and "validation loss" in text
    assert not list((tmp_path / "run" / "checkpoints").glob("quality-*"))


def test_quality_score_ranks_a_trained_model_above_an_untrained_one(prepared_demo_dataset, tmp_path):
    """The tracker's own scoring path (free-running synthesis + Whisper + speaker encoder) on the same
    sentences: a model overfit on them for 300 steps against the same model at initialisation."""
    import torch

    from voicetrain.training.train import train

    threads = torch.get_num_threads()
    try:
        cfg = tiny_cfg(overfit=2, quality_sentences=2, max_steps=300, val_every_steps=300, checkpoint_every_steps=300,
                       sample_every_steps=1000, log_every_steps=50, batch_size=2)
        import dataclasses

        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=3e-3, warmup_steps=20))
        train(prepared_demo_dataset, tmp_path / "trained", cfg)
    finally:
        torch.set_num_threads(threads)
    from voicetrain.evaluation.history import read_metrics_csv

    trained = [r for r in read_metrics_csv(tmp_path / "trained" / "metrics.csv") if "quality/score" in r][-1]
    untrained = _score_at_init(prepared_demo_dataset, tmp_path / "untrained", cfg)
    assert trained["quality/score"] > untrained + 0.1, (trained, untrained)


def _score_at_init(dataset, run_dir, cfg) -> float:
    """The tracker's score of the model as built (no training step), through a 1-step run's validation at step 0."""
    import dataclasses

    import torch

    from voicetrain.training.train import train

    threads = torch.get_num_threads()
    try:
        # lr 0: the one step changes nothing, so the validation scores the initial weights
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=1, val_every_steps=1),
                                optim=dataclasses.replace(cfg.optim, lr=0.0, ema_decay=0.0))
        train(dataset, run_dir, c)
    finally:
        torch.set_num_threads(threads)
    from voicetrain.evaluation.history import read_metrics_csv

    return [r for r in read_metrics_csv(run_dir / "metrics.csv") if "quality/score" in r][-1]["quality/score"]


# ----------------------------------------------------------------------------- overfitting on quality


class _FakeTrainer(SimpleNamespace):
    pass


def _tracker(tmp_path, values_by_step, patience=0):
    from voicetrain.training.callbacks import HealthCheck
    from voicetrain.training.quality import QualityTracker

    health = HealthCheck(tmp_path, warmup_steps=0, console=Console(file=io.StringIO()), quality_tracked=True)
    tr = QualityTracker([], lambda m: None, reference_clips={}, health=health, patience=patience,
                        console=Console(file=io.StringIO()), evaluator=object())
    tr.score = lambda pl_module: {"score": float(np.mean(list(values_by_step[tr._step].values()))), "cer": 0.1,
                                  "speaker_similarity": 0.8, "dnsmos": None, "values": values_by_step[tr._step]}
    return tr, health


def _validate(tr, step):
    tr._step = step
    trainer = _FakeTrainer(sanity_checking=False, global_step=step, callback_metrics={}, loggers=[], should_stop=False)
    tr.on_validation_end(trainer, None)
    return trainer


def test_quality_overfitting_warns_only_beyond_noise_and_stops_with_early_stopping(tmp_path):
    base = {f"s{i}": 0.80 + 0.01 * (i % 3) for i in range(8)}
    noisy = {k: v + (0.04 if i % 2 else -0.04) for i, (k, v) in enumerate(base.items())}
    worse = {k: v - 0.15 for k, v in base.items()}
    steps = {200: base, 400: noisy, 600: noisy, 800: worse, 1000: worse}
    tr, health = _tracker(tmp_path, steps, patience=2)
    for s in (200, 400, 600):
        assert not _validate(tr, s).should_stop
    assert "overfitting" not in health.warned  # within noise twice: no alarm
    _validate(tr, 800)
    assert "overfitting" not in health.warned  # one drop is not yet a trend
    t = _validate(tr, 1000)
    assert "overfitting" in health.warned and t.should_stop and "early-stop" in health.warned
    assert float(t.callback_metrics["quality/score"]) == pytest.approx(np.mean(list(worse.values())), abs=1e-6)
    assert float(t.callback_metrics["quality_choice"]) == 600.0  # the latest within noise of the best, not 1000


def test_rising_validation_loss_with_quality_improving_is_not_called_overfitting(tmp_path):
    import torch

    from voicetrain.training.callbacks import HealthCheck

    health = HealthCheck(tmp_path, warmup_steps=0, console=Console(file=io.StringIO()), quality_tracked=True)
    pl = SimpleNamespace(last_val_batch=None)
    for step, (val, q) in enumerate([(1.0, 0.70), (1.1, 0.72), (1.2, 0.75)], start=1):
        health.train_losses.append((step * 100, 2.0 - step * 0.1))
        trainer = _FakeTrainer(sanity_checking=False, global_step=step * 100, should_stop=False, loggers=[],
                               callback_metrics={"val/loss": torch.tensor(val), "quality/score": torch.tensor(q)})
        health.on_validation_end(trainer, pl)
    assert "val-loss-rising" in health.warned and "overfitting" not in health.warned
    assert "not overfitting" in (tmp_path / "health.jsonl").read_text()


def test_choose_latest_within_noise():
    from voicetrain.evaluation.quality import choose_latest_within_noise

    base = {f"s{i}": 0.80 + 0.01 * (i % 3) for i in range(8)}
    noisy = {k: v + (0.03 if i % 2 else -0.03) - 0.01 for i, (k, v) in enumerate(base.items())}
    worse = {k: v - 0.2 for k, v in base.items()}

    def e(values):
        return {"score": float(np.mean(list(values.values()))), "values": values}

    assert choose_latest_within_noise([e(worse), e(base), e(noisy)]) == 2  # later and within noise
    assert choose_latest_within_noise([e(base), e(noisy), e(worse)]) == 1  # the last one fell beyond noise
    assert choose_latest_within_noise([e(worse), e(base)]) == 1
    assert choose_latest_within_noise([{"score": None, "values": {}}]) is None
