"""A run's training history (RUN/metrics.csv): reading it, and where validation loss parts from training loss."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voicetrain.evaluation.checkpoints import RunEvalError


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """RUN/metrics.csv -> rows of {column: float} (empty cells left out)."""
    path = Path(path)
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, r in enumerate(csv.DictReader(f), start=2):
            row = {}
            for k, v in r.items():
                if k is None or v in (None, ""):
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    raise RunEvalError(f"{path}:{lineno}: column {k!r} is not a number: {v!r}") from None
            if "step" in row:
                rows.append(row)
    return rows


def overfitting_analysis(rows: Sequence[dict[str, float]], key: str = "loss", rises: int = 2) -> dict[str, Any]:
    """Train vs validation ``key`` over steps and where the gap between them opens.

    * validation points: rows with ``val/{key}`` (the last row wins for a repeated step, e.g. after a resume);
    * the training loss at validation step v_i is the mean of ``train/{key}`` over the
      logged steps in (v_{i-1}, v_i] — it smooths the per-batch noise;
    * ``min_val_step``: the validation with the lowest loss;
    * ``gap_opens_step``: the first validation v_i after which validation loss rises at
      ``rises`` (2) consecutive validations, val(v_i) < val(v_i+1) < val(v_i+2), while the
      training loss keeps falling, train(v_i+2) < train(v_i). None when that never happens.
    """
    val: dict[int, float] = {}
    for r in rows:
        v = r.get(f"val/{key}")
        if v is not None and math.isfinite(v):
            val[int(r["step"])] = v
    steps = sorted(val)
    train_pts = sorted((int(r["step"]), r[f"train/{key}"]) for r in rows
                       if r.get(f"train/{key}") is not None and math.isfinite(r[f"train/{key}"]))
    train_at: list[float | None] = []
    prev = -1
    for s in steps:
        window = [v for st, v in train_pts if prev < st <= s]
        train_at.append(float(np.mean(window)) if window else None)
        prev = s
    val_list = [val[s] for s in steps]
    out: dict[str, Any] = {
        "key": key,
        "definition": (f"first validation after which val/{key} rises at {rises} consecutive validations "
                       f"while train/{key} (mean over the steps since the previous validation) keeps falling"),
        "steps": steps, "val": val_list, "train": train_at,
        "gap": [v - t if t is not None else None for v, t in zip(val_list, train_at)],
        "min_val_step": None, "min_val": None, "gap_opens_step": None,
        "train_points": [list(p) for p in train_pts],
    }
    if not steps:
        return out
    i_min = int(np.argmin(val_list))
    out["min_val_step"], out["min_val"] = steps[i_min], val_list[i_min]
    for i in range(len(steps) - rises):
        rising = all(val_list[i + k + 1] > val_list[i + k] for k in range(rises))
        t0, t1 = train_at[i], train_at[i + rises]
        if rising and t0 is not None and t1 is not None and t1 < t0:
            out["gap_opens_step"] = steps[i]
            break
    return out
