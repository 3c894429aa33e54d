"""What the Train and Listen screens show of a run: read from the files training writes, nothing else.

metrics.csv (loss curves, quality/* columns), health.jsonl (warnings with their advice), samples/step_N/
(the latest audio samples), checkpoints/ (what can be listened to; which one is the voice and why).
"""

from __future__ import annotations

import csv
import json
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

_SAMPLE_DIR_RE = re.compile(r"^step_(\d+)$")
_STEP_RE = re.compile(r"step=(\d+)")
MAX_POINTS = 400
"""A curve is thinned to about this many points: the browser redraws it every few seconds."""


def _num(v: str | None) -> float | None:
    try:
        x = float(v) if v not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """{"train/loss": [[step, value], ...], "val/loss": ..., "quality/score": ...} from RUN/metrics.csv."""
    path = run_dir / "metrics.csv"
    keys = ("train/loss", "val/loss", "quality/score", "quality/cer", "quality/similarity")
    out: dict[str, list[list[float]]] = {k: [] for k in keys}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return out
    for r in rows:
        step = _num(r.get("step"))
        if step is None:
            continue
        for k in keys:
            v = _num(r.get(k))
            if v is not None:
                out[k].append([step, v])
    for k, pts in out.items():
        if len(pts) > MAX_POINTS:
            stride = math.ceil(len(pts) / MAX_POINTS)
            out[k] = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return out


def health(run_dir: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The newest health warnings (step, kind, message with its advice)."""
    try:
        lines = (run_dir / "health.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines[-limit:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def latest_samples(run_dir: Path) -> dict[str, Any]:
    """The newest samples/step_N/ folder's wavs (names relative to the run)."""
    sdir = run_dir / "samples"
    steps = sorted(((int(m.group(1)), d) for d in (sdir.iterdir() if sdir.is_dir() else [])
                    if d.is_dir() and (m := _SAMPLE_DIR_RE.match(d.name))), key=lambda x: x[0])
    for step, d in reversed(steps):
        wavs = sorted(p.name for p in d.glob("*.wav"))
        if wavs:
            return {"step": step, "files": [f"samples/{d.name}/{w}" for w in wavs]}
    return {"step": None, "files": []}


def checkpoint_files(run_dir: Path) -> list[str]:
    ckdir = run_dir / "checkpoints"
    files = [p for p in ckdir.glob("*.ckpt")] if ckdir.is_dir() else []

    def step(p: Path) -> int:
        m = _STEP_RE.search(p.name)
        return int(m.group(1)) if m else 1 << 60  # last.ckpt after the numbered ones
    return [p.name for p in sorted(files, key=lambda p: (step(p), p.name))]


def run_summary(run_dir: Path) -> dict[str, Any]:
    result = None
    try:
        result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    c = curves(run_dir)
    latest = {k: (v[-1] if v else None) for k, v in c.items()}
    return {"curves": c, "latest": latest, "health": health(run_dir), "samples": latest_samples(run_dir),
            "checkpoints": checkpoint_files(run_dir),
            "result": {k: result.get(k) for k in ("steps", "wall_seconds", "final_val_loss", "stopped_because",
                                                  "peak_rss_mb")} if isinstance(result, dict) else None}


class SynthCache:
    """The last few loaded checkpoints (A/B needs two), keyed by path and modification time; one synthesis at
    a time (2 cores, and training may be using them)."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def synthesize(self, ckpt: Path, text: str) -> tuple[Any, int]:
        from voicetrain.inference.synthesizer import Synthesizer

        key = (str(ckpt), ckpt.stat().st_mtime_ns)
        with self._lock:
            synth = self._items.pop(key, None)
            if synth is None:
                synth = Synthesizer.from_checkpoint(ckpt)
            self._items[key] = synth
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return synth.synthesize(text)
