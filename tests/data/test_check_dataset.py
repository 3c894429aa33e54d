"""`voicetrain check` and the data commands, run in-process through the CLI."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from voicetrain.cli import app
from voicetrain.data.cache import cache_path
from voicetrain.data.manifest import PreparedDataset
from voicetrain.data.prepare import PrepareConfig, prepare, split_items

runner = CliRunner()


def test_check_passes_on_prepared_demo_dataset(prepared_demo_dataset):
    r = runner.invoke(app, ["check", str(prepared_demo_dataset)])
    assert r.exit_code == 0, r.output
    assert "OK" in r.output and "12 items" in r.output
    ds = PreparedDataset.open(prepared_demo_dataset)
    assert ds.info.n_train == 11 and ds.info.n_val == 1
    for name in ("symbols.json", "stats.json", "metadata.csv", "qc.json", "report.html"):
        assert (prepared_demo_dataset / name).is_file()


def test_check_names_broken_items_and_prepare_repairs_them(prepared_demo_dataset, demo_corpus_dir, tmp_path):
    root = tmp_path / "tampered"
    shutil.copytree(prepared_demo_dataset, root)
    ds = PreparedDataset.open(root)
    a, b = ds.manifest("train")[:2]
    (root / a.audio).unlink()
    feat = cache_path(root, ds.info.audio, b.audio_hash)
    feat.write_bytes(feat.read_bytes()[: feat.stat().st_size // 2])

    r = runner.invoke(app, ["check", str(root)])
    assert r.exit_code == 1
    assert f"train/{a.id}: prepared wav" in r.output and "missing" in r.output
    assert f"train/{b.id}: feature file" in r.output and "damaged" in r.output
    assert "voicetrain prepare" in r.output

    # the advised fix works and redoes only the two damaged items
    res = prepare(PrepareConfig(input=str(demo_corpus_dir), out=str(root)))
    assert res.n_reused == 10
    assert runner.invoke(app, ["check", str(root)]).exit_code == 0


def test_cli_multi_speaker_demo_prepare_check(tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "ds"
    r = runner.invoke(app, ["demo-data", str(corpus), "--voices", "multi", "--utterances", "2"])
    assert r.exit_code == 0, r.output
    # 18 utterances: enough to run the audio stage in the 2-process pool
    r = runner.invoke(app, ["prepare", str(corpus), "--out", str(out), "--val-fraction", "0.1"])
    assert r.exit_code == 0, r.output
    ds = PreparedDataset.open(out)
    assert len(ds.info.speakers) == 9 and ds.info.format == "vctk"
    assert ds.info.n_train == 9 and ds.info.n_val == 9  # one val item per speaker with >= 2 items
    r = runner.invoke(app, ["check", str(out)])
    assert r.exit_code == 0, r.output


def test_cli_errors_name_the_path(tmp_path):
    r = runner.invoke(app, ["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 1 and "missing does not exist" in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 1 and "cannot tell the layout" in r.output
    r = runner.invoke(app, ["check", str(tmp_path)])
    assert r.exit_code == 1 and "not a prepared dataset" in r.output
    r = runner.invoke(app, ["demo-data", str(tmp_path / "d"), "--voices", "espeak"])
    assert r.exit_code == 1 and "bad voice spec" in r.output


def test_split_is_deterministic_and_spread_over_lengths():
    durs = {"a": [(f"a{i}", float(i)) for i in range(40)], "b": [("b0", 1.0), ("b1", 2.0)], "c": [("c0", 1.0)]}
    val = split_items(durs, 0.1, seed=0)
    assert val == split_items(durs, 0.1, seed=0)
    a_val = sorted(int(v[1:]) for v in val if v.startswith("a"))
    assert len(a_val) == 4 and a_val[-1] - a_val[0] >= 25  # every 10th, not the 4 shortest
    assert len([v for v in val if v.startswith("b")]) == 1 and not any(v.startswith("c") for v in val)
    assert split_items(durs, 0.0, seed=0) == set()
