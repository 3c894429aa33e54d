"""`voicetrain doctor`: real checks on this machine, with espeak-ng hidden where a test needs it missing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from voicetrain import hardware
from voicetrain.cli import app
from voicetrain.config import TextConfig, save_yaml
from voicetrain.data.manifest import DatasetInfo
from voicetrain.doctor import meminfo, run_doctor

runner = CliRunner()
KEYS = {"ok", "checks", "torch", "devices", "step_seconds", "tools", "disk", "memory", "recommended"}


@pytest.fixture
def no_espeak(tmp_path, monkeypatch):
    """espeak-ng hidden two ways: the binary (PATH) and the library phonemizer loads. phonemizer does not use
    PATH: it finds libespeak-ng through ctypes (ldconfig), unless PHONEMIZER_ESPEAK_LIBRARY names a file."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PHONEMIZER_ESPEAK_LIBRARY", str(tmp_path / "no-libespeak-ng.so"))


def _check(report, name):
    return next(c for c in report.checks if c.name == name)


def test_missing_espeak_is_reported_with_its_fix_and_stops_training(no_espeak, tmp_path):
    r = run_doctor(tmp_path, measure_step=False)
    espeak = _check(r, "espeak-ng")
    assert espeak.status == "warn" and espeak.fix == "apt-get install espeak-ng"
    phon = _check(r, "phonemizer")
    assert phon.status == "error" and "apt-get install espeak-ng" in phon.fix
    assert r.tools["espeak-ng"] is None and r.tools["flite"] is None
    assert not r.ok

    res = runner.invoke(app, ["doctor", "--folder", str(tmp_path), "--no-step"])
    assert res.exit_code == 1, res.output
    assert "fix: apt-get install espeak-ng" in res.output and "training cannot run" in res.output


def test_a_chars_dataset_trains_without_espeak(no_espeak, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    save_yaml(DatasetInfo(text=TextConfig(phonemizer="chars")), ds / "dataset.yaml")
    res = runner.invoke(app, ["doctor", "--folder", str(tmp_path), "--dataset", str(ds), "--no-step", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["ok"] is True
    phon = next(c for c in out["checks"] if c["name"] == "phonemizer")
    assert phon["status"] == "warn" and "apt-get install espeak-ng" in phon["fix"]


def test_json_on_this_machine(tmp_path):
    res = runner.invoke(app, ["doctor", "--folder", str(tmp_path / "new_run"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == KEYS
    assert out["ok"] is True
    assert out["torch"]["build"] in ("cpu", "cuda", "rocm", "mps") and out["torch"]["threads"] >= 1
    assert 0 < out["step_seconds"] < 30
    assert out["disk"]["path"] == str(tmp_path) and out["disk"]["free_gb"] > 0  # the nearest existing folder
    assert out["memory"]["total_gb"] >= out["memory"]["available_gb"] > 0
    assert out["recommended"]["preset"] in ("cpu", "gpu")
    if out["torch"]["build"] == "cpu":
        rec = out["recommended"]
        bf16 = hardware.cpu_native_bf16()  # this CPU's flags decide the precision (test_hardware covers both)
        assert (rec["preset"], rec["precision"], rec["accelerator"]) == (
            "cpu", "bf16-mixed" if bf16 else "32-true", "cpu")
        assert rec["batch"] == "8 (the CPU's default)" and rec["reason"].startswith("no CUDA device: CPU defaults")
    for c in out["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"} and c["status"] in ("ok", "warn", "error")
        assert c["status"] == "ok" or c["fix"], c  # every problem comes with its fix


def test_an_unusable_folder_is_an_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = run_doctor(blocker / "run", measure_step=False)  # a folder that cannot exist (root included)
    folder = _check(r, "folder")
    assert folder.status == "error" and folder.fix and not r.ok


def test_meminfo_parses_kb(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       16777216 kB\nMemFree:  1 kB\nMemAvailable:    8192000 kB\n")
    assert meminfo(str(f)) == {"total_gb": 16.0, "available_gb": 7.81}
    assert meminfo(str(tmp_path / "none")) == {}
