"""bench/peer: the dataset conversion to Piper's trainer layout and the stand-in for its missing MAS core.

Both run in voicetrain's own venv without piper installed (the peer's venv is not part of CI).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

PEER = Path(__file__).resolve().parents[2] / "bench" / "peer"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_peer_{name}", PEER / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


piper_layout = _load("piper_layout")
mas_core = _load("mas_core")


def _rows(csv_path: Path) -> list[list[str]]:
    # exactly how piper 1.8.0's VitsDataModule reads it
    with open(csv_path, encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="|"))


def _edit_manifest(ds: Path, split: str, edit) -> None:
    lines = [json.loads(x) for x in (ds / f"{split}.jsonl").read_text().splitlines() if x.strip()]
    edit(lines)
    (ds / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_layout_lists_every_prepared_utterance_for_piper(prepared_demo_dataset, tmp_path):
    from voicetrain.data.manifest import PreparedDataset

    before = _snapshot(prepared_demo_dataset)
    layout = piper_layout.to_piper_layout(prepared_demo_dataset, tmp_path / "piper")
    ds = PreparedDataset.open(prepared_demo_dataset)
    utts = ds.manifest("train") + ds.manifest("val")
    rows = _rows(layout.csv_path)
    assert len(rows) == len(utts) == layout.n_utterances
    assert [r[0] for r in rows] == [u.audio for u in utts]
    assert all(len(r) == 2 and (layout.audio_dir / r[0]).is_file() for r in rows)
    assert rows[0][1] == " ".join(utts[0].text.split())
    assert (layout.sample_rate, layout.num_speakers, layout.espeak_voice) == (22050, 1, "en-us")
    args = layout.fit_args()
    assert args[args.index("--data.csv_path") + 1] == str(layout.csv_path)
    assert args[args.index("--model.num_speakers") + 1] == "1"
    assert _snapshot(prepared_demo_dataset) == before  # the dataset is only read


def test_layout_quotes_delimiters_and_names_speakers(prepared_demo_dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(prepared_demo_dataset, ds)

    def edit(lines):
        lines[0]["text"] = 'She said "a|b"  twice.'
        lines[1]["speaker"] = "other"
    _edit_manifest(ds, "train", edit)
    layout = piper_layout.to_piper_layout(ds, tmp_path / "piper")
    rows = _rows(layout.csv_path)
    assert layout.num_speakers == 2
    assert all(len(r) == 3 for r in rows)  # AUDIO|SPEAKER|text, Piper's multi-speaker format
    assert rows[0][2] == 'She said "a|b" twice.'
    assert rows[1][1] == "other"


def test_layout_refuses_another_sample_rate_and_missing_audio(prepared_demo_dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(prepared_demo_dataset, ds)
    yaml = ds / "dataset.yaml"
    yaml.write_text(yaml.read_text().replace("sample_rate: 22050", "sample_rate: 16000"))
    with pytest.raises(ValueError, match="sample_rate is 16000"):
        piper_layout.to_piper_layout(ds, tmp_path / "a")
    yaml.write_text(yaml.read_text().replace("sample_rate: 16000", "sample_rate: 22050"))
    first = json.loads((ds / "val.jsonl").read_text().splitlines()[0])
    (ds / first["audio"]).unlink()
    with pytest.raises(FileNotFoundError, match=first["id"]):
        piper_layout.to_piper_layout(ds, tmp_path / "b")


def _piper_maximum_path(neg_cent: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # piper.train.vits.monotonic_align.maximum_path (1.8.0) around the core, minus torch
    path = np.zeros(neg_cent.shape, dtype=np.int32)
    t_t_max = mask.sum(1)[:, 0].astype(np.int32)
    t_s_max = mask.sum(2)[:, 0].astype(np.int32)
    mas_core.maximum_path_c(path, neg_cent.astype(np.float32), t_t_max, t_s_max)
    return path


def test_core_shim_matches_monotonic_alignment_search():
    import torch
    from monotonic_alignment_search import maximum_path_numpy

    rng = np.random.default_rng(0)
    b, t_t, t_s = 3, 40, 12
    frames, phones = np.array([40, 31, 17]), np.array([12, 9, 7])
    mask = np.zeros((b, t_t, t_s), dtype=np.float32)  # [b, t_t, t_s] as Piper builds attn_mask
    for i in range(b):
        mask[i, :frames[i], :phones[i]] = 1
    neg_cent = rng.normal(size=(b, t_t, t_s)).astype(np.float32) * 3
    path = _piper_maximum_path(neg_cent.copy(), mask)

    # the reference: glow-tts' pure-numpy search, in its own [b, t_x (text), t_y (frames)] layout
    ref = maximum_path_numpy(torch.from_numpy(neg_cent).transpose(1, 2), torch.from_numpy(mask).transpose(1, 2))
    np.testing.assert_array_equal(path, ref.transpose(1, 2).numpy().astype(np.int32))
    for i in range(b):
        p = path[i, :frames[i], :phones[i]]
        assert (p.sum(1) == 1).all()  # every frame belongs to exactly one phoneme
        idx = p.argmax(1)
        assert idx[0] == 0 and idx[-1] == phones[i] - 1 and (np.diff(idx) >= 0).all() and (np.diff(idx) <= 1).all()
        assert path[i].sum() == frames[i]  # nothing outside the mask
