"""voicetrain studio, training side, through the HTTP API with real `voicetrain` subprocesses: the estimate,
a tiny run with live curves and samples, pause (a checkpoint at the step it stopped) and resume, listening
to a checkpoint, overriding the selected one, registering with a note, the bundle download."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from voicetrain.studio.app import create_app  # noqa: E402
from voicetrain.studio.checks import TakeChecker  # noqa: E402

TINY = ["train.batch_size=4", "train.val_every_steps=8", "train.checkpoint_every_steps=1000",
        "train.sample_every_steps=8", "train.log_every_steps=1", "train.n_sample_sentences=1", "train.threads=1",
        "train.quality_sentences=0"]


def wait_for(what, check, timeout: float = 240.0, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def job(c: TestClient, run: str) -> dict:
    return c.get(f"/api/runs/{run}").json()["job"]


def metrics_step(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return max((int(r["step"]) for r in csv.DictReader(f)), default=0)
    except (OSError, ValueError):
        return 0


def studio_with_demo_takes(project: Path, demo_corpus_dir: Path) -> tuple[TestClient, list[list[str]]]:
    """A studio on ``project`` (QC only, no Whisper) whose prompts and takes are the demo corpus, all usable."""
    c = TestClient(create_app(project, checker=TakeChecker(whisper=False), check_on_start=False))
    rows = [line.split("|") for line in (demo_corpus_dir / "metadata.csv").read_text().splitlines() if line]
    prompts = "".join(f"{r[0]}\t{r[1]}\n" for r in rows)
    assert c.post("/api/prompts", content=prompts.encode(), headers={"content-type": "text/plain"}).status_code == 200
    for r in rows:
        v = c.post(f"/api/takes/{r[0]}", content=(demo_corpus_dir / "wavs" / f"{r[0]}.wav").read_bytes()).json()
        assert v["verdict"]["status"] != "bad", v
    return c, rows


def test_estimate_train_pause_resume_listen_register(tmp_path, demo_corpus_dir):
    project = tmp_path / "proj"
    c, rows = studio_with_demo_takes(project, demo_corpus_dir)
    # fine-tuning without a shipped base is refused with a message saying what to do instead
    opts = c.get("/api/train/options").json()
    assert opts["good_takes"] == len(rows)
    if not opts["finetune_available"]:
        r = c.post("/api/runs/ft/start", json={"mode": "finetune"})
        assert r.status_code == 400 and "no shipped base model" in r.json()["detail"]

    body = {"mode": "scratch", "preset": "tiny", "max_minutes": None, "max_steps": 100000, "settings": TINY}
    assert c.post("/api/runs/r1/estimate", json=body).status_code == 200
    j = wait_for("the estimate", lambda: (x := job(c, "r1")) and x["status"] in ("estimated", "failed") and x)
    assert j["status"] == "estimated", c.get("/api/runs/r1").json()["log"]
    est = j["estimate"]
    assert est["steps"] == 100000 and est["seconds_per_step"] > 0 and est["peak_rss_mb"] > 100
    # the CLI prints seconds per step to 2 decimals: at 100,000 steps that rounding alone moves the ETA by 8 min
    assert est["eta_minutes"] == pytest.approx(est["seconds_per_step"] * 100000 / 60, abs=0.005 * 100000 / 60 + 1)
    run_dir = project / "runs" / "r1"
    assert not (run_dir / "checkpoints").exists()  # the estimate trains nothing

    assert c.post("/api/runs/r1/start", json=body).status_code == 200
    wait_for("a few logged steps", lambda: metrics_step(run_dir) >= 10 or job(c, "r1")["status"] == "failed",
             every=0.2)
    assert job(c, "r1")["status"] == "running", c.get("/api/runs/r1").json()["log"]
    # the training process is a fresh interpreter running the CLI, not a fork of the studio
    pid = job(c, "r1")["pid"]
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmd[1:4] == [b"-m", b"voicetrain.cli", b"train"], cmd

    assert c.post("/api/runs/r1/pause").status_code == 200
    j = wait_for("the pause", lambda: (x := job(c, "r1"))["status"] in ("paused", "failed") and x)
    assert j["status"] == "paused", c.get("/api/runs/r1").json()["log"]
    steps = sorted(int(p.stem.split("=")[1]) for p in (run_dir / "checkpoints").glob("step=*.ckpt"))
    assert steps and 10 <= steps[-1] < 100000 and (run_dir / "checkpoints" / "last.ckpt").exists()
    paused_at = steps[-1]

    view = c.get("/api/runs/r1").json()
    assert len(view["curves"]["train/loss"]) >= 10 and view["curves"]["val/loss"]
    assert view["samples"]["files"], view["samples"]
    wav = c.get(f"/api/runs/r1/files/{view['samples']['files'][0]}")
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    assert c.get("/api/runs/r1/files/config.yaml").status_code == 404  # only samples and plots are served

    # resume continues from the paused step (the log says so), then stop it
    assert c.post("/api/runs/r1/resume").status_code == 200
    wait_for("steps after the resume", lambda: metrics_step(run_dir) > paused_at + 4
             or job(c, "r1")["status"] == "failed", every=0.2)
    assert f"resuming from {run_dir / 'checkpoints'}" in c.get("/api/runs/r1").json()["log"].replace("\n", "")
    assert c.post("/api/runs/r1/stop").status_code == 200
    assert wait_for("the stop", lambda: (x := job(c, "r1"))["status"] in ("stopped", "failed") and x)["status"] == "stopped"

    # listen: the selected checkpoint is marked, can be overridden, and speaks
    ck = c.get("/api/runs/r1/checkpoints").json()
    assert ck["selected"] in ck["checkpoints"] and ck["reason"]
    other = next(n for n in ck["checkpoints"] if n.startswith("step=") and n != ck["selected"])
    assert c.post("/api/runs/r1/select", json={"checkpoint": other}).status_code == 200
    ck2 = c.get("/api/runs/r1/checkpoints").json()
    assert ck2["selected"] == other and ck2["overridden"]
    r = c.post("/api/synthesize", json={"run": "r1", "checkpoint": "best", "text": "Hello there."})
    assert r.status_code == 200 and r.content[:4] == b"RIFF" and r.headers["x-checkpoint"] == other
    r = c.post("/api/synthesize", json={"run": "r1", "checkpoint": "last.ckpt", "text": "Hello there."})
    assert r.status_code == 200 and r.headers["x-checkpoint"] == "last.ckpt"
    assert c.post("/api/synthesize", json={"run": "r1", "checkpoint": "../x.ckpt", "text": "Hi."}).status_code == 404

    # keep: register with a note, list, download the bundle, copy the snippet
    r = c.post("/api/voices", json={"run": "r1", "name": "myvoice", "note": "first try, tiny"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v1" and "myvoice@v1" in r.json()["snippet"]
    voices = c.get("/api/voices").json()["voices"]
    assert [(v["name"], v["version"], v["note"], v["checkpoint"]) for v in voices] == [
        ("myvoice", "v1", "first try, tiny", other)]
    z = zipfile.ZipFile(io.BytesIO(c.get("/api/voices/myvoice/v1/bundle.zip").content))
    names = set(z.namelist())
    assert {"myvoice-v1/voice.json", "myvoice-v1/model.safetensors", "myvoice-v1/card.md"} <= names
    assert "Note: first try, tiny" in z.read("myvoice-v1/card.md").decode()
    assert json.loads(z.read("myvoice-v1/card.json"))["note"] == "first try, tiny"
    snippet = c.get("/api/voices/myvoice/v1/snippet").text
    assert f"--store {project / 'models'}" in snippet and "/v1/synthesize" in snippet
