"""ONNX export of the acoustic model: same mels as PyTorch, runtime through onnxruntime, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from voicetrain.cli import app  # noqa: E402
from voicetrain.inference.bundle import load_voice  # noqa: E402
from voicetrain.inference.export import export_onnx  # noqa: E402
from voicetrain.inference.onnx_runtime import OnnxRuntimeError, load_onnx_synthesizer  # noqa: E402
from voicetrain.inference.bundle import register_run  # noqa: E402
from voicetrain.registry.store import ModelStore  # noqa: E402

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "A large size in stockings is hard to sell.",
    "Hi!",
    "These days a chicken leg is a rare dish, and it costs 42 dollars on the 3rd of May.",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    st = ModelStore(tmp_path_factory.mktemp("store"))
    register_run(tiny_run, "demo", store=st)
    out = tmp_path_factory.mktemp("onnx")
    export_onnx("demo", out, store=st)
    return st, out


def test_onnx_and_pytorch_mels_agree(exported):
    st, out = exported
    torch_synth = load_voice("demo", store=st).synthesizer
    onnx_synth = load_onnx_synthesizer(out)
    n_checked = 0
    for text in SENTENCES:
        ids, _ = torch_synth.tokenizer(text)
        assert onnx_synth.tokenizer(text)[0] == ids  # the same tokenizer code path
        for speed in (1.0, 0.5, 2.0):
            a = torch_synth.mel_for_ids(ids, 0, speed)
            b = onnx_synth.mel_for_ids(ids, 0, speed)
            assert a.shape == b.shape, (text, speed)
            assert float((a - b).abs().max()) < 1e-3, (text, speed)
            n_checked += 1
    assert n_checked == 3 * len(SENTENCES)
    wa, sra = torch_synth.synthesize(SENTENCES[0])
    wb, srb = onnx_synth.synthesize(SENTENCES[0])
    assert sra == srb and wa.shape == wb.shape
    assert float(np.abs(wa - wb).max()) < 1e-2


def test_onnx_config_describes_the_voice(exported):
    st, out = exported
    cfg = json.loads((out / "model.onnx.json").read_text())
    voice = json.loads((st.resolve("demo") / "voice.json").read_text())
    for key in ("symbols", "stats", "speakers", "audio", "text"):
        assert cfg[key] == voice[key], key
    assert cfg["onnx"] == "model.onnx" and len(cfg["onnx_sha256"]) == 64


def test_damaged_onnx_is_refused(exported, tmp_path):
    _, out = exported
    for name in ("model.onnx", "model.onnx.json"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(OnnxRuntimeError, match=r"model\.onnx is damaged"):
        load_onnx_synthesizer(tmp_path)


def test_export_cli_from_run_folder(tiny_run, tmp_path):
    r = CliRunner().invoke(app, ["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "o"),
                                 "--checkpoint", "last"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "model.onnx").stat().st_size > 0
    audio, sr = load_onnx_synthesizer(tmp_path / "o").synthesize(SENTENCES[1])
    assert sr == 22050 and len(audio) > 0
    r = CliRunner().invoke(app, ["export", str(tiny_run), "--format", "tflite", "--out", str(tmp_path / "p")])
    assert r.exit_code == 1 and "unknown --format" in r.output
