"""synth and align on the tiny run, through the CLI in-process."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from typer.testing import CliRunner

from voicetrain.cli import app
from voicetrain.inference.synthesizer import Synthesizer
from voicetrain.text.tokenizer import NoSpeakableTextError

runner = CliRunner()


def test_synth_cli_writes_wav(tiny_run, tmp_path):
    out = tmp_path / "hello.wav"
    r = runner.invoke(app, ["synth", str(tiny_run), "--text", "The birch canoe slid on the smooth planks.",
                            "--out", str(out), "--gl-iters", "4"])
    assert r.exit_code == 0, r.output
    audio, sr = sf.read(out)
    assert sr == 22050 and len(audio) > 0.1 * sr


def test_synth_text_file(tiny_run, tmp_path):
    texts = tmp_path / "t.tsv"
    texts.write_text("a\tHello there.\nb\t!!!\nc\tIt costs $5.\n", encoding="utf-8")
    r = runner.invoke(app, ["synth", str(tiny_run), "--text-file", str(texts), "--out-dir", str(tmp_path / "o"),
                            "--gl-iters", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "a.wav").exists() and (tmp_path / "o" / "c.wav").exists()
    assert not (tmp_path / "o" / "b.wav").exists()  # nothing speakable: skipped with a message


def test_unspeakable_text_is_a_clear_error(tiny_run, tmp_path):
    r = runner.invoke(app, ["synth", str(tiny_run), "--text", "?!... ;", "--out", str(tmp_path / "x.wav")])
    assert r.exit_code == 1 and "no speakable content" in r.output
    assert not (tmp_path / "x.wav").exists()


def test_bounded_synthesis_of_long_text(tiny_run):
    synth = Synthesizer.from_checkpoint(tiny_run, griffin_lim_iters=1)
    text = ("This is a rather long sentence that keeps going, " * 40)[:2000]
    wav, sr = synth.synthesize(text)
    assert 0 < len(wav) / sr < 600
    wav, sr = synth.synthesize("a")  # a single phoneme
    assert len(wav) > 0
    with pytest.raises(NoSpeakableTextError):
        synth.synthesize("")
    with pytest.raises(ValueError, match="unknown speaker"):
        synth.synthesize("hello", speaker="nobody")


def test_align_writes_json_and_textgrid(tiny_run, prepared_demo_dataset, tmp_path):
    out = tmp_path / "align"
    r = runner.invoke(app, ["align", str(tiny_run), str(prepared_demo_dataset), "--out", str(out)])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.json"))
    assert len(files) == 12 and len(list(out.glob("*.TextGrid"))) == 12
    data = json.loads(files[0].read_text())
    frames = sum(a["frames"] for a in data["alignment"])
    assert frames == round(data["duration"] * data["frames_per_second"])
    assert data["alignment"][-1]["end"] == pytest.approx(data["duration"], abs=1e-3)
    assert 'class = "IntervalTier"' in (out / (files[0].stem + ".TextGrid")).read_text()


def test_train_cli_dry_run(prepared_demo_dataset, tmp_path):
    r = runner.invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                            "--dry-run", "--max-steps", "100"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_train_cli_rejects_unknown_preset(prepared_demo_dataset, tmp_path):
    r = runner.invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "r"), "--preset", "huge"])
    assert r.exit_code == 1 and "unknown preset 'huge'" in r.output


def test_synth_text_file_ids_stay_inside_out_dir(tiny_run, tmp_path):
    out = tmp_path / "a" / "b" / "o"
    texts = tmp_path / "t.tsv"
    texts.write_text(f"../../escape\tHi.\n{tmp_path}/abs\tHi.\nfine\tHi.\n", encoding="utf-8")
    r = runner.invoke(app, ["synth", str(tiny_run), "--text-file", str(texts), "--out-dir", str(out), "--gl-iters", "2"])
    assert r.exit_code == 0, r.output
    assert (out / "fine.wav").exists()
    assert not (tmp_path / "a" / "escape.wav").exists() and not (tmp_path / "abs.wav").exists()
    assert r.output.count("would write outside") == 2


@pytest.mark.parametrize("flags, says", [
    (["--batch-size", "0"], "train.batch_size: 0"),
    (["--lr", "-1"], "optim.lr: -1.0"),
    (["--lr", "nan"], "optim.lr: nan"),
    (["--overfit", "-1"], "train.overfit: -1"),
    (["--max-minutes", "-1"], "train.max_minutes: -1"),
    (["--early-stop", "-1"], "train.early_stopping_patience: -1"),
    (["--threads", "-1"], "train.threads: -1"),
    (["--accumulate", "0"], "train.accumulate: 0"),
    (["--precision", "float7"], "train.precision: 'float7'"),
])
def test_train_cli_out_of_range_values_are_named(prepared_demo_dataset, tmp_path, flags, says):
    r = runner.invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                            "--dry-run", *flags])
    assert r.exit_code == 1 and says in r.output and "expected" in r.output, r.output


def test_out_of_range_yaml_values_are_named(prepared_demo_dataset, tmp_path):
    cfg = tmp_path / "c.yaml"
    for body, says in [("optim:\n  decay: bogus\n", "optim.decay: 'bogus'"),
                       ("optim:\n  ema_decay: 2\n", "optim.ema_decay: 2.0"),
                       ("train:\n  checkpoint_every_steps: 0\n", "train.checkpoint_every_steps: 0"),
                       ("optim:\n  betas: [0.9, 1.5]\n", "optim.betas")]:
        cfg.write_text(body)
        r = runner.invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "r"), "--config", str(cfg),
                                "--dry-run"])
        assert r.exit_code == 1 and says in r.output, (body, r.output)


def test_synth_gl_iters_must_be_positive(tiny_run, tmp_path):
    r = runner.invoke(app, ["synth", str(tiny_run), "--text", "Hi.", "--out", str(tmp_path / "x.wav"), "--gl-iters", "0"])
    assert r.exit_code == 1 and "--gl-iters" in r.output and not (tmp_path / "x.wav").exists()


def test_train_cli_set_reaches_the_saved_config(prepared_demo_dataset, tmp_path):
    import yaml

    r = runner.invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                            "--dry-run", "--lr", "2e-3", "--set", "train.val_every_steps=7",
                            "--set", "optim.warmup_steps=11", "--set", "model_config.hidden=48"])
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 2e-3 and saved["optim"]["warmup_steps"] == 11
    assert saved["train"]["val_every_steps"] == 7 and saved["model_config"] == {"hidden": 48}


@pytest.mark.parametrize("assignment, says", [
    ("optim.lrr=1", "unknown key(s) 'lrr'"),
    ("train.batch_size=0", "train.batch_size: 0"),
    ("nosuch.key=1", "'nosuch' is not a section"),
    ("train.batch_size", "expected KEY=VALUE"),
])
def test_train_cli_set_is_checked_like_yaml(prepared_demo_dataset, tmp_path, assignment, says):
    r = runner.invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                            "--dry-run", "--set", assignment])
    assert r.exit_code == 1 and says in r.output, r.output
    assert not (tmp_path / "r" / "config.yaml").exists()
