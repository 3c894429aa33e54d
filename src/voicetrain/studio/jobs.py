"""Training from the studio: every heavy step is a `voicetrain` CLI subprocess, never code in the studio.

A fresh interpreter (``python -m voicetrain.cli``, started with exec, not fork) trains: the studio adds
nothing to the training process's memory, a crash in one cannot take the other down, and a run started
here is the same run `voicetrain train` makes. The studio only reads what the run writes (metrics.csv,
health.jsonl, samples/, checkpoints/).

A job is ``prepare`` (when the takes changed) then ``train --dry-run`` (the estimate) or ``train`` /
``finetune``. Its state lives in RUN/studio_job.json and its output in RUN/studio.log, so a studio
restarted while a run trains finds it again (by pid, checked against /proc/PID/cmdline). Pause and stop
send SIGTERM: Lightning then stops after the current step and the run saves a checkpoint there
(training.loop.FinalCheckpoint); resume starts the same command again, which continues from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicetrain.fileio import atomic_write_json
from voicetrain.studio.project import Project, ProjectError

JOB_FILE = "studio_job.json"
LOG_FILE = "studio.log"
MODES = ("scratch", "finetune")
PRESETS = ("cpu", "gpu", "tiny")
STOP_GRACE_S = 120.0
"""SIGTERM lets the step finish and a checkpoint be written; after this the process group is killed."""
_SET_RE = re.compile(r"^[a-z_]+\.[a-z_]+=[^\s;|&`$<>]{1,80}$")
FINETUNE_FLAGS = {"train.batch_size": "--batch-size", "train.threads": "--threads",
                  "train.early_stopping_patience": "--early-stop", "optim.lr": "--lr"}
"""The settings a fine-tune accepts, as `voicetrain finetune`'s flags (the same names --set takes for training)."""
_ESTIMATE_RE = re.compile(r"estimate: ([\d.]+) s/step, ([\d.]+) samples/s, peak RSS (\d+) MB; ETA ([\d.]+) min "
                          r"for (\d+) steps")


def cli(*args: str) -> list[str]:
    """The command line of one `voicetrain` call, in the interpreter (and venv) that runs the studio."""
    return [sys.executable, "-m", "voicetrain.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # the child imports the very package the studio runs (a relative PYTHONPATH would not survive cwd=PROJECT):
    # the folder holding voicetrain/ (this file is voicetrain/studio/jobs.py)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([here] + [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["COLUMNS"] = "200"  # rich wraps help and progress lines at the terminal width otherwise
    env["NO_COLOR"] = "1"
    return env


@dataclass
class Capabilities:
    """What this install's CLI accepts, read from its own --help (so a newer CLI is picked up unchanged)."""

    finetune_needs_from: bool = True
    """True when `voicetrain finetune` has no shipped base to fall back on (--from required)."""
    finetune_dry_run: bool = False
    piper_export: bool = False

    @classmethod
    def probe(cls) -> "Capabilities":
        def help_text(*cmd: str) -> str:
            try:
                r = subprocess.run(cli(*cmd, "--help"), capture_output=True, text=True, timeout=120, env=_env())
                return r.stdout + r.stderr
            except (OSError, subprocess.TimeoutExpired):
                return ""

        return cls.from_help(help_text("finetune"), help_text("export"))

    @classmethod
    def from_help(cls, finetune_help: str, export_help: str) -> "Capabilities":
        """Read typer's help: a required option's row starts with '*' and ends with '[required]'."""
        rows = [ln.strip("│ \t") for ln in finetune_help.splitlines() if "--from" in ln]
        needs_from = not rows or any(r.startswith("*") or "[required]" in r for r in rows)
        return cls(finetune_needs_from=needs_from, finetune_dry_run="--dry-run" in finetune_help,
                   piper_export="piper" in export_help.lower())


@dataclass
class TrainRequest:
    """What the Train screen sends."""

    name: str
    mode: str = "scratch"
    preset: str = "cpu"
    max_minutes: float | None = 15.0
    max_steps: int | None = None
    settings: list[str] = field(default_factory=list)
    """Extra ``SECTION.KEY=VALUE`` config values (the CLI's --set), e.g. train.val_every_steps=50."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ProjectError(f"mode {self.mode!r}: choose scratch or finetune")
        if self.preset not in PRESETS:
            raise ProjectError(f"preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.max_minutes is not None and not (0 < self.max_minutes <= 7 * 24 * 60):
            raise ProjectError(f"max_minutes {self.max_minutes}: give a number of minutes above 0")
        if self.max_steps is not None and not (0 < self.max_steps <= 10_000_000):
            raise ProjectError(f"max_steps {self.max_steps}: give a number of steps above 0")
        for s in self.settings:
            if not _SET_RE.fullmatch(s):
                raise ProjectError(f"setting {s!r}: write SECTION.KEY=VALUE, e.g. train.val_every_steps=50")
        if self.mode == "finetune":
            other = [s for s in self.settings if s.split("=", 1)[0] not in FINETUNE_FLAGS]
            if other:
                raise ProjectError(f"setting {other[0]!r}: fine-tuning takes only {', '.join(FINETUNE_FLAGS)} "
                                   "(`voicetrain finetune` has no --set); clear the others or choose scratch")

    def train_args(self, dataset: Path, out: Path) -> list[str]:
        if self.mode == "finetune":
            args = ["finetune", str(dataset), "--out", str(out)]
            if self.max_steps:
                args += ["--max-steps", str(self.max_steps)]
            for s in self.settings:
                key, value = s.split("=", 1)
                args += [FINETUNE_FLAGS[key], value]
        else:
            args = ["train", str(dataset), "--out", str(out), "--preset", self.preset]
            if self.max_steps:
                args += ["--max-steps", str(self.max_steps)]
            for s in self.settings:
                args += ["--set", s]
        if self.max_minutes:
            args += ["--max-minutes", f"{self.max_minutes:g}"]
        return args

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "preset": self.preset, "max_minutes": self.max_minutes,
                "max_steps": self.max_steps, "settings": list(self.settings)}


def parse_estimate(log: str) -> dict[str, Any] | None:
    """The figures of `voicetrain train --dry-run`'s estimate line, or None."""
    m = None
    for m in _ESTIMATE_RE.finditer(log):
        pass
    if m is None:
        return None
    return {"seconds_per_step": float(m.group(1)), "samples_per_second": float(m.group(2)),
            "peak_rss_mb": int(m.group(3)), "eta_minutes": float(m.group(4)), "steps": int(m.group(5))}


def _alive(pid: int | None) -> bool:
    """True when ``pid`` runs a voicetrain command (a reused pid running something else is not ours)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z" and b"voicetrain.cli" in cmd


class Jobs:
    """Starts, watches, pauses and resumes the project's training jobs (one at a time: 2 cores)."""

    def __init__(self, project: Project):
        self.project = project
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._run: str | None = None
        self._caps: Capabilities | None = None
        self._stop_requested: str | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- state
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = Capabilities.probe()
        return self._caps

    def _job_path(self, run: str) -> Path:
        return self.project.run_dir(run) / JOB_FILE

    def job(self, run: str) -> dict[str, Any] | None:
        try:
            job = json.loads(self._job_path(run).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if job.get("status") in ("running", "stopping") and not _alive(job.get("pid")) and not self._owns(run):
            # the studio was restarted, or the process died unseen: say what the folder shows
            job["status"] = "finished" if (self.project.run_dir(run) / "result.json").exists() else "interrupted"
            job["pid"] = None
            self._save(run, job)
        return job

    def _owns(self, run: str) -> bool:
        """True while this studio's job thread drives ``run`` (between its steps too, when no process runs)."""
        return self._run == run and self._thread is not None and self._thread.is_alive()

    def _save(self, run: str, job: dict[str, Any]) -> None:
        atomic_write_json(self._job_path(run), job)

    def active(self) -> str | None:
        """The run whose job is running now, if any."""
        if self._owns(self._run or ""):
            return self._run
        for run in self.project.run_names():
            j = self.job(run)
            if j and j.get("status") in ("running", "stopping"):
                return run
        return None

    def log_tail(self, run: str, chars: int = 4000) -> str:
        p = self.project.run_dir(run) / LOG_FILE
        try:
            with open(p, "rb") as f:
                f.seek(max(0, p.stat().st_size - chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ------------------------------------------------------------- starting
    def start(self, req: TrainRequest, good_takes: list[str], *, estimate_only: bool = False,
              resume: bool = False) -> dict[str, Any]:
        with self._lock:
            busy = self.active()
            if busy:
                raise ProjectError(f"run {busy!r} is still working; pause or stop it first (one job at a time)")
            if not good_takes:
                raise ProjectError("no usable takes yet: record some prompts first (takes marked bad are left out)")
            run_dir = self.project.run_dir(req.name)
            if not resume and not estimate_only and (run_dir / "checkpoints").is_dir():
                raise ProjectError(f"run {req.name!r} already has checkpoints: resume it, or pick a new name")
            if req.mode == "finetune" and self.capabilities().finetune_needs_from:
                raise ProjectError(
                    "fine-tuning needs a base voice, and this install has no shipped base model (`voicetrain "
                    "finetune` still requires --from): train from scratch here, or fine-tune from one of your "
                    "runs on the command line with `voicetrain finetune DATASET --from RUN --out NEW_RUN`")
            run_dir.mkdir(parents=True, exist_ok=True)
            job = {"run": req.name, "kind": "estimate" if estimate_only else "train", "request": req.to_dict(),
                   "status": "running", "phase": "starting", "pid": None, "started": time.time(),
                   "takes": len(good_takes), "message": "", "estimate": (self.job(req.name) or {}).get("estimate")}
            self._save(req.name, job)
            self._run, self._stop_requested = req.name, None
            # the takes are staged and the thread starts under the lock: no second job can slip in between
            self.project.stage_corpus(good_takes)
            fingerprint = _takes_fingerprint(self.project, good_takes)
            self._thread = threading.Thread(target=self._drive, args=(req, job, fingerprint, estimate_only),
                                            daemon=True, name=f"studio-job-{req.name}")
            self._thread.start()
            return job

    def _drive(self, req: TrainRequest, job: dict[str, Any], fingerprint: str, estimate_only: bool) -> None:
        run_dir = self.project.run_dir(req.name)
        log = run_dir / LOG_FILE
        dataset = self.project.dataset_dir
        try:
            stamp = dataset / "studio_takes.sha256"
            if not (stamp.exists() and stamp.read_text().strip() == fingerprint and (dataset / "dataset.yaml").exists()):
                rc = self._step(req.name, job, "preparing the takes", log, cli(
                    "prepare", str(self.project.path("corpus")), "--out", str(dataset), "--workers", "1"))
                if rc != 0:
                    return self._finish(req.name, job, "failed", "prepare failed: see the log below")
                stamp.write_text(fingerprint + "\n")
            if estimate_only:
                tmp = Path(tempfile.mkdtemp(prefix=".estimate-", dir=self.project.root / "runs"))
                try:
                    # a fine-tune's settings are all --set keys too (FINETUNE_FLAGS)
                    args = TrainRequest(req.name, "scratch", req.preset, req.max_minutes, req.max_steps,
                                        req.settings).train_args(dataset, tmp)
                    if req.mode == "finetune" and self.capabilities().finetune_dry_run:
                        args = req.train_args(dataset, tmp)
                    rc = self._step(req.name, job, "measuring speed and memory", log, cli(*args, "--dry-run"))
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                est = parse_estimate(log.read_text(encoding="utf-8", errors="replace"))
                if rc != 0 or est is None:
                    return self._finish(req.name, job, "failed", "the estimate failed: see the log below")
                est["mode"] = req.mode
                if req.mode == "finetune" and not self.capabilities().finetune_dry_run:
                    est["note"] = ("measured for training from scratch (`voicetrain finetune` has no --dry-run): "
                                   "fine-tuning trains fewer weights, so its steps take at most this long")
                job["estimate"] = est
                return self._finish(req.name, job, "estimated", "")
            rc = self._step(req.name, job, "training", log, cli(*req.train_args(dataset, run_dir)))
            if self._stop_requested:
                return self._finish(req.name, job, self._stop_requested,
                                    "paused: resume continues from the checkpoint saved when it stopped"
                                    if self._stop_requested == "paused" else "stopped; you can still resume it")
            if rc != 0:
                return self._finish(req.name, job, "failed", f"training exited with status {rc}: see the log below")
            return self._finish(req.name, job, "finished", "")
        except Exception as e:  # noqa: BLE001 - a job thread must leave its state on disk, whatever happened
            return self._finish(req.name, job, "failed", f"{type(e).__name__}: {e}")

    def _step(self, run: str, job: dict[str, Any], phase: str, log: Path, cmd: list[str]) -> int:
        if self._stop_requested:
            return 1
        with open(log, "ab") as out:
            out.write(f"\n$ voicetrain {' '.join(cmd[3:])}\n".encode())
            out.flush()
            # its own session: a signal meant for the studio (Ctrl+C) does not stop training, and a stop
            # request can reach the whole process group
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_env(), cwd=self.project.root, start_new_session=True)
        self._proc = proc
        job.update(phase=phase, pid=proc.pid, command=" ".join(cmd[3:]))
        self._save(run, job)
        return proc.wait()

    def _finish(self, run: str, job: dict[str, Any], status: str, message: str) -> None:
        job.update(status=status, message=message, pid=None, phase="", ended=time.time())
        self._save(run, job)
        self._proc = None

    # ------------------------------------------------------------- pause / stop
    def stop(self, run: str, how: str = "paused") -> dict[str, Any]:
        """SIGTERM the run's process: it saves a checkpoint after the current step and exits."""
        job = self.job(run)
        if not job or job.get("status") not in ("running", "stopping"):
            raise ProjectError(f"run {run!r} is not running")
        self._stop_requested = how
        pid = job.get("pid")
        job.update(status="stopping", message=f"{how[:-1]}ing after the current step (a checkpoint is saved)")
        self._save(run, job)
        if pid and _alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            threading.Thread(target=self._kill_later, args=(pid,), daemon=True).start()
        if not self._owns(run):  # a job of an earlier studio process: nobody else will record the end
            job.update(status=how, pid=None)
            self._save(run, job)
        return job

    @staticmethod
    def _kill_later(pid: int) -> None:
        deadline = time.time() + STOP_GRACE_S
        while time.time() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.5)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def shutdown(self) -> None:
        """Leave training running when the studio exits (it is its own process); only forget the handle."""
        self._proc = None


def _takes_fingerprint(project: Project, takes: list[str]) -> str:
    h = hashlib.sha256()
    for pid in sorted(takes):
        wav, txt, _ = project.take_paths(pid)
        h.update(f"{pid}\0{wav.stat().st_size}\0{wav.stat().st_mtime_ns}\0{txt.read_text(encoding='utf-8')}\0".encode())
    return h.hexdigest()
