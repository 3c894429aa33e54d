"""`voicetrain eval RUN`: synthesis of the validation sentences per checkpoint, metrics beside the real
recordings, selection of a checkpoint, eval.json and report.html.

One tiny run (2 training steps, a checkpoint at each) on the demo corpus prepared with 3 validation
sentences; one test goes through every metric (DNSMOS and speaker similarity included), the others
switch the slow ones off.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from voicetrain.evaluation.checkpoints import RunEvalError, resolve_checkpoints
from voicetrain.evaluation.evaluate_run import RunEvalConfig, evaluate_run, read_texts
from voicetrain.evaluation.history import overfitting_analysis


@pytest.fixture(scope="module")
def eval_dataset(tmp_path_factory, demo_corpus_dir) -> Path:
    from voicetrain.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("eval_ds") / "dataset"
    prepare(PrepareConfig(input=str(demo_corpus_dir), out=str(out), val_fraction=0.25))
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, eval_dataset) -> Path:
    import torch

    from voicetrain.run_config import RunConfig, TrainConfig
    from voicetrain.training.train import train

    run = tmp_path_factory.mktemp("eval_run") / "run"
    threads = torch.get_num_threads()  # train() sets the process-wide count
    try:
        train(eval_dataset, run, RunConfig(preset="tiny", train=TrainConfig(quality_sentences=0,
            max_steps=2, val_every_steps=1, checkpoint_every_steps=1, batch_size=4, log_every_steps=1,
            sample_every_steps=1000, threads=1)))
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="module")
def evaluator():
    from voicetrain.evaluation.models import Evaluator

    return Evaluator()


class _AudioSrc(HTMLParser):
    def __init__(self):
        super().__init__()
        self.audio, self.img = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "audio":
            self.audio.append(a.get("src"))
        if tag == "img":
            self.img.append(a.get("src"))


def _sources(report: Path) -> _AudioSrc:
    p = _AudioSrc()
    p.feed(report.read_text(encoding="utf-8"))
    return p


def test_eval_run_every_metric(tiny_run, evaluator, tmp_path):
    texts = tmp_path / "extra.txt"
    texts.write_text("The birch canoe slid on the smooth planks.\n", encoding="utf-8")
    out = tmp_path / "eval"
    r = evaluate_run(RunEvalConfig(run=str(tiny_run), texts=str(texts), checkpoints="last", max_utterances=2,
                                   out=str(out), max_reference_wavs=3, progress=False), evaluator=evaluator)
    data = json.loads((out / "eval.json").read_text())
    assert data == r
    for key in ("schema_version", "run", "dataset", "settings", "real", "checkpoints", "selection", "overfitting",
                "qc", "timings", "plots"):
        assert key in data, key
    # the ceiling: real validation recordings scored the same way
    real = data["real"]
    assert real["n"] == 2 and real["means"]["cer"] < 0.2  # flite rms is intelligible to Whisper
    assert real["means"]["cer_pocketsphinx"] < 0.5  # and to pocketsphinx, the second opinion
    assert data["asr"]["names"] == ["whisper", "pocketsphinx"] and data["asr"]["primary"] == "whisper"
    assert real["means"]["dnsmos_ovrl"] > 2.0 and real["means"]["speaker_similarity"] > 0.7
    [ck] = data["checkpoints"]
    assert ck["step"] == 2 and ck["name"] == "step=2.ckpt"  # last.ckpt is recorded by its stable name
    assert ck["val"]["n"] == 2 and ck["texts"]["n"] == 1
    for u in ck["utterances"]:
        assert u["cer"] is not None and u["wer"] is not None and u["dnsmos_ovrl"] is not None
        assert u["asr"] == "whisper" and u["cer"] == u["cer_whisper"] and u["cer_pocketsphinx"] is not None
        assert u["speaker_similarity"] is not None and u["nearest_speaker"] is not None
        assert u["speaker_mismatch"] is False  # one speaker in the dataset
        assert u["rtf"] > 0 and (out / u["audio"]).is_file()
        if u["set"] == "val":
            assert u["mcd_db"] > 0 and u["voicing_error"] is not None and (out / u["real_audio"]).is_file()
        else:
            assert u["mcd_db"] is None and u["real_audio"] is None
    assert ck["all"]["rtf"] > 0 and ck["score"]["cer"] is not None
    assert data["overfitting"]["loss"]["steps"] == [1, 2]
    assert data["qc"]["summary"]["n_kept"] == 12
    # the report: every player and image points at a file beside it
    report = out / "report.html"
    src = _sources(report)
    assert len(src.audio) == 2 + 2 + 1  # real + synthesized validation sentences + one extra text
    for s in src.audio + src.img:
        assert s and not Path(s).is_absolute() and (out / s).is_file(), s
    assert "plots/overfitting.png" in src.img and "plots/metrics.png" in src.img
    html = report.read_text()
    assert "real recordings (ceiling)" in html and "CER ps" in html and "pocketsphinx: " in html


def test_select_best_records_choice(tiny_run, evaluator, tmp_path):
    from voicetrain.inference.checkpoint import find_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    r = evaluate_run(RunEvalConfig(run=str(run), select_best=True, max_utterances=2, dnsmos=False,
                                   speaker_similarity=False, progress=False), evaluator=evaluator)
    assert [c["step"] for c in r["checkpoints"]] == [1, 2]  # 'all' by default, one entry per step
    sel = r["selection"]
    assert sel["selected"] in {"step=1.ckpt", "step=2.ckpt"} and sel["ranking"][0] == sel["selected"]
    assert len(sel["verdicts"]) == 2
    assert next(v for v in sel["verdicts"] if v["name"] == sel["selected"])["verdict"].startswith("selected")
    assert "Whisper CER" in sel["rule"]
    assert "why" in (run / "eval" / "report.html").read_text()
    assert (run / "selected_checkpoint.txt").read_text().strip() == sel["selected"]
    assert find_checkpoint(run, "best") == run / "checkpoints" / sel["selected"]
    assert json.loads((run / "eval" / "eval.json").read_text())["selection"]["selected"] == sel["selected"]
    for s in _sources(run / "eval" / "report.html").audio:
        assert (run / "eval" / s).is_file(), s


def test_cli_eval(tiny_run, tmp_path, capsys):
    from voicetrain.cli import main

    out = tmp_path / "cli_eval"
    try:
        main(["eval", str(tiny_run), "--checkpoints", "1", "--max-utterances", "1", "--no-dnsmos",
              "--no-speaker-similarity", "--no-progress", "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    text = capsys.readouterr().out
    assert "real recordings: CER" in text and "step=1.ckpt" in text
    assert (out / "eval.json").is_file() and (out / "report.html").is_file()
    assert not (tiny_run / "selected_checkpoint.txt").exists()


def test_run_without_checkpoints_is_a_clear_error(tiny_run, tmp_path, capsys):
    from voicetrain.cli import main

    run = tmp_path / "empty_run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run / "config.yaml", run / "config.yaml")
    with pytest.raises(RunEvalError, match=r"no checkpoints .*voicetrain train"):
        evaluate_run(RunEvalConfig(run=str(run), progress=False))
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--no-progress"])
    assert e.value.code == 1
    assert "checkpoints" in capsys.readouterr().err
    with pytest.raises(RunEvalError, match="no such run folder"):
        evaluate_run(RunEvalConfig(run=str(tmp_path / "nope"), progress=False))


def test_resolve_checkpoints(tiny_run):
    assert [c.name for c in resolve_checkpoints(tiny_run, "all")] == ["step=1.ckpt", "step=2.ckpt"]
    assert [c.step for c in resolve_checkpoints(tiny_run, "2,1")] == [1, 2]
    with pytest.raises(RunEvalError, match="expected best, last, all"):
        resolve_checkpoints(tiny_run, "newest")
    with pytest.raises(RunEvalError, match="no checkpoint for step 99"):
        resolve_checkpoints(tiny_run, "99")


def test_overfitting_analysis_finds_where_the_gap_opens():
    rows = []
    train = [5, 4, 3, 2.5, 2, 1.5, 1.2]
    val = [5.2, 4.3, 3.5, 3.4, 3.6, 3.9, 4.2]
    for i, (t, v) in enumerate(zip(train, val), start=1):
        rows += [{"step": 10 * i - 5, "train/loss": t + 0.2}, {"step": 10 * i, "train/loss": t - 0.2},
                 {"step": 10 * i, "val/loss": v}]
    a = overfitting_analysis(rows)
    assert a["steps"] == [10, 20, 30, 40, 50, 60, 70]
    assert a["train"][0] == pytest.approx(5.0)  # mean of the train rows since the previous validation
    assert a["min_val_step"] == 40 and a["gap_opens_step"] == 40
    # a single rise is noise, not a gap; and a rise while train loss rises too is not overfitting
    assert overfitting_analysis(rows[:-6])["gap_opens_step"] is None
    flat = [dict(r, **({"train/loss": 9.0} if "train/loss" in r and r["step"] > 40 else {})) for r in rows]
    assert overfitting_analysis(flat)["gap_opens_step"] is None
    assert overfitting_analysis([])["min_val_step"] is None


def test_read_texts(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("First sentence.\n\nSecond one.\n", encoding="utf-8")
    assert read_texts(plain) == [("text_0001", "First sentence."), ("text_0002", "Second one.")]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("x1\tHello there.\n", encoding="utf-8")
    assert read_texts(tsv) == [("x1", "Hello there.")]
    harvard = read_texts("harvard")
    assert len(harvard) == 720 and harvard[0] == ("h01_01", "The birch canoe slid on the smooth planks.")
    with pytest.raises(RunEvalError, match=re.escape(str(tmp_path / "missing.txt"))):
        read_texts(tmp_path / "missing.txt")
