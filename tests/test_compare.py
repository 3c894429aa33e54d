"""voicetrain compare: matched-step and matched-time sections, an HTML report whose audio all exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from voicetrain.run_config import RunConfig, TrainConfig

# a time snapshot at the first batch in both runs, so matched time has a shared mark
SNAP = [0.001]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, prepared_demo_dataset) -> tuple[Path, Path]:
    """A tiny run from scratch and a speaker-embedding fine-tune of it (the tiny_run pattern of tests/training)."""
    from voicetrain.run_config import FinetuneConfig
    from voicetrain.training.finetune import finetune
    from voicetrain.training.train import train

    root = tmp_path_factory.mktemp("compare_runs")
    scratch = root / "scratch"
    train(prepared_demo_dataset, scratch, RunConfig(preset="tiny", train=TrainConfig(quality_sentences=0,
        batch_size=4, max_steps=8, val_every_steps=4, checkpoint_every_steps=4, sample_every_steps=100,
        log_every_steps=1, n_sample_sentences=1, threads=1, snapshot_minutes=SNAP)))
    tuned = root / "tuned"
    finetune(prepared_demo_dataset, scratch, tuned, FinetuneConfig(strategy="speaker-embedding", speaker_name="newvoice"),
             TrainConfig(max_steps=6, val_every_steps=3, checkpoint_every_steps=3, sample_every_steps=15, batch_size=4,
                         threads=1, early_stopping_patience=0, snapshot_minutes=SNAP, quality_sentences=0))
    return scratch, tuned


@pytest.fixture(scope="module")
def compared(tmp_path_factory, two_runs):
    from voicetrain.cli import main

    out = tmp_path_factory.mktemp("compare") / "cmp"
    texts = out.parent / "texts.txt"
    texts.write_text("The birch canoe slid on the smooth planks.\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        main(["compare", str(two_runs[0]), str(two_runs[1]), "--out", str(out), "--texts", str(texts),
              "--max-utterances", "1", "--max-reference-wavs", "3", "--points", "1", "--no-dnsmos", "--no-progress", "--gl-iters", "4"])
    assert e.value.code == 0
    return out, json.loads((out / "compare.json").read_text(encoding="utf-8"))


def test_matched_sections(compared, two_runs):
    out, r = compared
    names = [x["name"] for x in r["runs"]]
    assert names == ["scratch", "tuned"]
    for key in ("matched_steps", "matched_time"):
        pts = r[key]["points"]
        assert pts, key
        for p in pts:
            assert set(p["runs"]) == set(names)
            for row in p["runs"].values():
                assert row["checkpoint"].endswith(".ckpt") and row["step"] > 0
                assert row["wall_s"] is not None and row["distance"] is not None
                assert row["cer"] is not None and row["speaker_similarity"] is not None
    # targets: the common step range; the shared time snapshot mark is one of the time targets
    assert max(p["target_step"] for p in r["matched_steps"]["points"]) == 6
    assert any(abs(p["target_minutes"] - SNAP[0]) < 1e-9 for p in r["matched_time"]["points"])
    for run in r["runs"]:
        assert run["val_curve"] and all({"step", "wall_s", "val_loss"} <= set(v) for v in run["val_curve"])
    assert r["runs"][1]["finetune_strategy"] == "speaker-embedding"
    assert (out / "plots" / "val_loss.png").is_file()
    assert set(r["plots"]) >= {"val_loss", "matched_steps", "matched_time"}


def test_html_audio_exists(compared):
    out, r = compared
    page = (out / "compare.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<audio[^>]*src="([^"]+)"', page)
    # every sentence x run at every matched point, plus the real recordings
    assert len(srcs) >= 2 * len(r["sentences"])
    for s in srcs:
        assert not Path(s).is_absolute() and (out / s).is_file(), s
    # the same sentence text appears for both runs
    assert any(s["set"] == "texts" for s in r["sentences"]) and any(s["set"] == "val" for s in r["sentences"])
    assert any(s["real_audio"] for s in r["sentences"])  # validation sentences play beside the real recording


def test_errors_name_the_file(tmp_path, two_runs):
    from voicetrain.evaluation.compare import CompareConfig, CompareError, compare_runs

    with pytest.raises(CompareError, match="at least two"):
        compare_runs(CompareConfig(runs=[str(two_runs[0])], out=str(tmp_path / "o")))
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(CompareError, match=re.escape(str(bare / "metrics.csv"))):
        compare_runs(CompareConfig(runs=[str(two_runs[0]), str(bare)], out=str(tmp_path / "o")))
