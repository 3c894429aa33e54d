"""Which checkpoints of a run to evaluate, and which one to keep: resolution by name or step, and the
selection rule training uses (the latest checkpoint within noise of the highest quality)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from voicetrain.evaluation.quality import QUALITY_RULE, choose_latest_within_noise, paired_difference
from voicetrain.fileio import atomic_write_text


class RunEvalError(ValueError):
    """The run, its dataset or an option cannot be evaluated; the message names the file and the fix."""


@dataclass(frozen=True)
class CheckpointRef:
    name: str
    """File name inside RUN/checkpoints (what selected_checkpoint.txt records)."""
    path: Path
    step: int

    @property
    def label(self) -> str:
        return f"step_{self.step:07d}"


# When several files hold the same step, record the most stable name: step=N.ckpt is
# only removed by rotation, best-step=N.ckpt when a better one appears, and
# last.ckpt is overwritten by every later save.
_NAME_PREFERENCE = ("step=", "quality-step=", "best-step=", "")


def _name_rank(name: str) -> int:
    for i, prefix in enumerate(_NAME_PREFERENCE):
        if name.startswith(prefix):
            return i
    return len(_NAME_PREFERENCE)


def _stored_step(path: Path) -> int:
    from voicetrain.inference.checkpoint import checkpoint_step, load_checkpoint_safe

    step = checkpoint_step(path)
    if step >= 0:
        return step
    return int(load_checkpoint_safe(path).get("global_step", 0))


def resolve_checkpoints(run: str | os.PathLike, which: str) -> list[CheckpointRef]:
    """``which`` ('best' | 'last' | 'all' | 'N,M,...') -> checkpoints sorted by step, one per step."""
    from voicetrain.inference.checkpoint import find_checkpoint

    run = Path(run)
    ckdir = run / "checkpoints"
    files = sorted(ckdir.glob("*.ckpt")) if ckdir.is_dir() else []
    if not files:
        raise RunEvalError(f"{ckdir}: no checkpoints (*.ckpt) to evaluate; train first "
                           f"(`voicetrain train DATASET --out {run}`) or pass the right RUN folder")
    which = which.strip()
    if which == "all":
        paths = files
    elif which in ("best", "last"):
        paths = [find_checkpoint(run, which)]
    else:
        paths = []
        for part in which.split(","):
            part = part.strip()
            if not part.isdigit():
                raise RunEvalError(f"--checkpoints {which!r}: expected best, last, all or steps like 1000,2000")
            try:
                paths.append(find_checkpoint(run, part))
            except FileNotFoundError as e:
                raise RunEvalError(str(e)) from None
    # one entry per step, under the most stable of the names that hold it (last.ckpt -> step=N.ckpt)
    stable: dict[int, Path] = {}
    for f in files:
        step = _stored_step(f)
        if step not in stable or _name_rank(f.name) < _name_rank(stable[step].name):
            stable[step] = f
    by_step = {}
    for p in paths:
        step = _stored_step(p)
        by_step[step] = stable.get(step, p)
    return [CheckpointRef(p.name, p, s) for s, p in sorted(by_step.items())]


def select_checkpoint(candidates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pick one checkpoint from ``[{name, step, quality, quality_values: {sentence: q}, mcd_db}]``.

    The rule training uses (:mod:`voicetrain.evaluation.quality`): the quality score
    :data:`~voicetrain.evaluation.quality.QUALITY_RULE`, and of the checkpoints in step order the latest
    one not worse beyond noise (paired bootstrap, 95%) than the highest-scoring one. Every checkpoint's
    verdict says why it won or lost. Without any quality score (no text scored), the lowest MCD-DTW
    wins, then the later step.

    Returns {"selected", "step", "quality", "rule", "ranking": [names], "verdicts": [{name, step,
    quality, delta, low, high, verdict}]} (delta: quality minus the highest-scoring checkpoint's).
    """
    if not candidates:
        raise RunEvalError("no checkpoints to select from")
    inf = float("inf")

    def finite(v):
        return v is not None and math.isfinite(v)

    ordered = sorted(candidates, key=lambda c: c["step"])
    entries = [{"score": c.get("quality"), "values": c.get("quality_values") or {}} for c in ordered]
    i = choose_latest_within_noise(entries)
    if i is not None:
        chosen = ordered[i]
        best = max((c for c in ordered if finite(c.get("quality"))), key=lambda c: (c["quality"], c["step"]))
        rule = QUALITY_RULE + "; the latest checkpoint within noise of the highest-scoring one wins"
    else:
        chosen = min(ordered, key=lambda c: (c["mcd_db"] if finite(c.get("mcd_db")) else inf, -c["step"]))
        best = None
        rule = "no sentence had a CER (no text scored): lowest MCD-DTW, then the later step"
    verdicts = []
    for c in ordered:
        v: dict[str, Any] = {"name": c["name"], "step": c["step"], "quality": c.get("quality"),
                             "delta": None, "low": None, "high": None}
        d = None
        if best is not None and finite(c.get("quality")) and c is not best:
            d = paired_difference(c.get("quality_values") or {}, best.get("quality_values") or {})
            if d is not None:
                v.update(delta=d.mean, low=d.low, high=d.high)
        if c is chosen:
            v["verdict"] = "selected" + (" (highest score)" if c is best else ", within noise of the highest")
        elif best is None:
            v["verdict"] = "higher MCD-DTW"
        elif not finite(c.get("quality")):
            v["verdict"] = "not scored (no CER)"
        elif c is best:
            v["verdict"] = f"highest score, but the later {chosen['name']} is within noise of it"
        elif d is not None and d.worse_beyond_noise:
            v["verdict"] = "worse beyond noise than the highest"
        elif c["step"] < chosen["step"]:
            v["verdict"] = "within noise, but earlier than the selected"
        else:
            v["verdict"] = "later, but worse beyond noise"
        verdicts.append(v)
    ranking = [chosen] + sorted((c for c in ordered if c is not chosen),
                                key=lambda c: (-(c["quality"]) if finite(c.get("quality")) else inf, -c["step"]))
    return {"selected": chosen["name"], "step": chosen["step"], "quality": chosen.get("quality"), "rule": rule,
            "ranking": [c["name"] for c in ranking], "verdicts": verdicts}


def write_selection(run: str | os.PathLike, name: str) -> Path:
    """Record checkpoint file ``name`` (inside RUN/checkpoints) as the run's best, atomically."""
    run = Path(run)
    if not (run / "checkpoints" / name).is_file():
        raise RunEvalError(f"{run / 'checkpoints' / name}: cannot select a checkpoint that does not exist")
    path = run / "selected_checkpoint.txt"
    atomic_write_text(path, name + "\n")
    return path
