"""Compare training runs side by side: ``voicetrain compare RUN_A RUN_B [...] --out DIR``.

Typical use: fine-tuning strategies against each other and against training from
scratch, at the same number of steps and at the same wall-clock budget.

What is compared
----------------
* Validation loss against steps and against training wall time, from each
  RUN/metrics.csv (rows with ``val/loss``; ``wall_s`` counts training time from the
  start of the fit, continued across resumes).
* Evaluation metrics at **matched steps** and at **matched wall time**. For each
  target (a step, or a number of minutes), each run contributes the checkpoint whose
  step (or wall time) is closest to it (ties: the later checkpoint); the distance is
  reported beside every choice, since runs only keep some checkpoints (``step=N``,
  ``best-step=N``, ``last``, and ``time=Mmin-step=N`` snapshots when
  ``TrainConfig.snapshot_minutes`` was set). A checkpoint's wall time is the
  ``wall_s`` of RUN/metrics.csv interpolated at its step (extrapolated at the run's
  mean speed past the last logged row).

  Default targets: steps ``common * k / points`` for k = 1..points, with ``common``
  the largest checkpoint step every run reached; wall times: the snapshot marks all
  runs share (plus the common end), else ``common * k / points`` of the largest common
  checkpoint wall time; at a shared snapshot mark each run contributes that snapshot.
  Targets whose choices coincide for every run are dropped.
* The same sentences' audio side by side: a table sentence x run (plus the real
  recording where the sentence is a validation sentence of a run's dataset) for each
  matched point.

The checkpoints are scored by :func:`voicetrain.evaluation.evaluate_run.evaluate_run`
(one call per run, only the checkpoints some target chose, into DIR/runs/NAME, which
also holds that run's own eval.json and report.html) with ONE
:class:`~voicetrain.evaluation.models.Evaluator` shared by every call, so each
metric model loads once.

Outputs in DIR: compare.json, compare.html, plots/val_loss.png,
plots/matched_steps.png, plots/matched_time.png, runs/NAME/... (audio and per-run
evaluations). Every path inside compare.json and compare.html is relative to DIR.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voicetrain.fileio import atomic_write_text
from voicetrain.evaluation.checkpoints import CheckpointRef, RunEvalError, resolve_checkpoints
from voicetrain.evaluation.evaluate_run import HARVARD, RunEvalConfig, evaluate_run
from voicetrain.evaluation.history import read_metrics_csv
from voicetrain.evaluation.results import json_ready, run_info
from voicetrain.evaluation.models import Evaluator
from voicetrain.templates import write_page

COMPARE_SCHEMA_VERSION = 1


class CompareError(RunEvalError):
    """Runs or options that cannot be compared; the message names the file and the fix."""


@dataclass(frozen=True)
class CompareConfig:
    runs: list[str]
    """RUN folders written by ``voicetrain train`` or ``voicetrain finetune`` (at least two)."""
    out: str
    """Output folder DIR."""
    texts: str | None = HARVARD
    """Sentences every run speaks (besides its dataset's validation sentences): a TSV / metadata.csv /
    one-sentence-per-line file, ``'harvard'`` (default), or None for validation sentences only."""
    max_utterances: int = 5
    """Cap on validation sentences, and separately on texts, per checkpoint."""
    steps: list[int] = field(default_factory=list)
    """Target steps; empty: chosen automatically (see the module docstring)."""
    minutes: list[float] = field(default_factory=list)
    """Target training wall times in minutes; empty: chosen automatically."""
    points: int = 2
    """Number of automatic targets per axis."""
    names: list[str] = field(default_factory=list)
    """Display names for the runs (default: the folder names)."""
    dnsmos: bool = True
    speaker_similarity: bool = True
    max_reference_wavs: int = 10
    griffin_lim_iters: int = 32
    asr: str = "both"
    """'whisper', 'pocketsphinx' or 'both' (see :class:`~voicetrain.evaluation.models.Evaluator`)."""
    asr_model: str | None = None
    progress: bool = True


# ----------------------------------------------------------------------------- run data


@dataclass
class RunCurves:
    """What compare reads from one run folder."""

    name: str
    path: Path
    checkpoints: list[CheckpointRef]
    wall_s: dict[int, float | None]
    """Training wall time at each checkpoint step (None without any logged row)."""
    val: list[dict[str, float]]
    """Validation points: {step, wall_s, val_loss} (the last row wins for a repeated step)."""
    info: dict[str, Any]
    snapshots: dict[float, int] = field(default_factory=dict)
    """{M: N} of the run's time=Mmin-step=N.ckpt snapshots (listed under step=N.ckpt when both exist)."""

    def val_loss_at(self, step: int) -> tuple[float | None, int | None]:
        """The validation loss of the last validation at or before ``step`` (and that validation's step)."""
        before = [v for v in self.val if v["step"] <= step]
        if not before:
            return None, None
        v = before[-1]
        return v["val_loss"], int(v["step"])


_SNAPSHOT_RE = re.compile(r"^time=([0-9.]+)min-step=\d+\.ckpt$")
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def _wall_at(steps: np.ndarray, walls: np.ndarray, step: int) -> float | None:
    if steps.size == 0:
        return None
    if step <= steps[-1]:
        return float(np.interp(step, steps, walls))
    rate = walls[-1] / steps[-1] if steps[-1] > 0 else 0.0  # past the last logged row: the run's mean speed
    return float(walls[-1] + (step - steps[-1]) * rate)


def read_run(path: str | os.PathLike, name: str) -> RunCurves:
    """Checkpoints, their wall times and the validation curve of one run; CompareError names what is missing."""
    run = Path(path)
    if not run.is_dir():
        raise CompareError(f"{run}: no such run folder (the --out folder of `voicetrain train` or `voicetrain finetune`)")
    metrics_path = run / "metrics.csv"
    if not metrics_path.is_file():
        raise CompareError(f"{metrics_path}: missing; compare reads validation loss and wall time from it "
                           "(written during training by `voicetrain train`/`finetune`): pass a training RUN folder")
    rows = read_metrics_csv(metrics_path)
    ckpts = resolve_checkpoints(run, "all")
    timed = {}
    for r in rows:
        if "wall_s" in r:
            timed[int(r["step"])] = r["wall_s"]
    timed.setdefault(0, 0.0)
    steps = np.array(sorted(timed), dtype=float)
    walls = np.maximum.accumulate(np.array([timed[int(s)] for s in steps], dtype=float))
    wall = {c.step: _wall_at(steps, walls, c.step) for c in ckpts}
    val: dict[int, dict[str, float]] = {}
    for r in rows:
        v = r.get("val/loss")
        if v is not None and math.isfinite(v):
            val[int(r["step"])] = {"step": int(r["step"]), "wall_s": r.get("wall_s"), "val_loss": v}
    cfg = run_info(run / "config.yaml")
    info: dict[str, Any] = {k: cfg.get(k) for k in ("model", "preset", "dataset")}
    ft = cfg.get("finetune") or {}  # configs before the finetune section kept its keys at the top
    info.update(finetune_strategy=ft.get("strategy", cfg.get("finetune_strategy")),
                init_from=ft.get("init_from", cfg.get("init_from")))
    info["speakers"] = list(cfg.get("speakers") or [])
    result_path = run / "result.json"
    if result_path.is_file():
        try:
            res = json.loads(result_path.read_text(encoding="utf-8"))
            info.update({"steps": res.get("steps"), "wall_seconds": res.get("wall_seconds"),
                         "stopped_because": res.get("stopped_because"), "final_val_loss": res.get("final_val_loss")})
        except (OSError, json.JSONDecodeError):
            pass  # result.json is a summary only; the curves come from metrics.csv
    from voicetrain.inference.checkpoint import checkpoint_step

    marks = {float(m.group(1)): checkpoint_step(p) for p in (run / "checkpoints").glob("time=*min-step=*.ckpt")
             if (m := _SNAPSHOT_RE.match(p.name))}
    return RunCurves(name, run, ckpts, wall, [val[s] for s in sorted(val)], info, marks)


def _names(runs: Sequence[str], given: Sequence[str]) -> list[str]:
    if given and len(given) != len(runs):
        raise CompareError(f"--names gives {len(given)} name(s) for {len(runs)} run(s)")
    raw = list(given) if given else [Path(r).resolve().name for r in runs]
    out, seen = [], set()
    for i, n in enumerate(raw):
        n = _NAME_RE.sub("_", n).strip("._") or f"run{i + 1}"
        base, k = n, 2
        while n in seen:
            n, k = f"{base}-{k}", k + 1
        seen.add(n)
        out.append(n)
    return out


# ----------------------------------------------------------------------------- matching


def _closest(cands: list[tuple[float, int]], target: float) -> tuple[float, int] | None:
    """(position, step) candidates -> the closest to ``target`` (ties: the later step)."""
    if not cands:
        return None
    return min(cands, key=lambda c: (abs(c[0] - target), -c[1]))


def match_points(runs: Sequence[RunCurves], axis: str, targets: Sequence[float]) -> list[dict[str, Any]]:
    """For each target (a step, or seconds of wall time), the closest checkpoint of every run.

    Returns [{"target": t, "choices": {run name: step}}]; a target whose choices equal
    an earlier target's for every run is dropped. A wall-time target equal to a run's
    time snapshot mark takes that snapshot (it was saved when the run's own timer passed
    the mark).
    """
    points, seen = [], set()
    for t in targets:
        choices = {}
        for r in runs:
            snap = r.snapshots.get(round(t / 60.0, 6)) if axis == "time" else None
            if snap is not None and snap in r.wall_s:
                choices[r.name] = snap
                continue
            if axis == "step":
                cands = [(float(c.step), c.step) for c in r.checkpoints]
            else:
                cands = [(r.wall_s[c.step], c.step) for c in r.checkpoints if r.wall_s.get(c.step) is not None]
            best = _closest(cands, t)
            if best is None:
                raise CompareError(f"{r.path / 'metrics.csv'}: no logged wall time, so no checkpoint can be matched "
                                   "by time; the training log is empty (train longer than log_every_steps)")
            choices[r.name] = best[1]
        key = tuple(choices[r.name] for r in runs)
        if key in seen:
            continue
        seen.add(key)
        points.append({"target": t, "choices": choices})
    return points


def auto_step_targets(runs: Sequence[RunCurves], points: int) -> list[float]:
    common = min(max(c.step for c in r.checkpoints) for r in runs)
    return sorted({float(round(common * k / points)) for k in range(1, points + 1)} - {0.0}) or [float(common)]


def auto_time_targets(runs: Sequence[RunCurves], points: int) -> list[float]:
    """Seconds: the snapshot marks every run has, else evenly spaced up to the common checkpoint wall time."""
    marks = None
    for r in runs:
        marks = set(r.snapshots) if marks is None else marks & set(r.snapshots)
    ends = [max((w for w in r.wall_s.values() if w is not None), default=0.0) for r in runs]
    common = min(ends)
    if marks:
        return sorted({m * 60.0 for m in marks} | {common})
    return sorted({common * k / points for k in range(1, points + 1)})


# ----------------------------------------------------------------------------- compare


def _point_row(run: RunCurves, ck: dict[str, Any], target: float, axis: str) -> dict[str, Any]:
    step = ck["step"]
    wall = run.wall_s.get(step)
    loss, loss_step = run.val_loss_at(step)
    pos = float(step) if axis == "step" else wall
    a, v, t = ck["all"], ck["val"], ck["texts"]
    return {
        "checkpoint": ck["name"], "step": step, "wall_s": wall, "minutes": wall / 60 if wall is not None else None,
        "distance": (pos - target) if pos is not None else None,
        "val_loss": loss, "val_loss_step": loss_step,
        "cer": a["means"].get("cer"), "wer": a["means"].get("wer"),
        "cer_pocketsphinx": a["means"].get("cer_pocketsphinx"),
        "cer_val": v["means"].get("cer"), "cer_texts": t["means"].get("cer"),
        "speaker_similarity": a["means"].get("speaker_similarity"),
        "speaker_mismatch_rate": a.get("speaker_mismatch_rate"),
        "dnsmos_ovrl": a["means"].get("dnsmos_ovrl"), "mcd_db": v["means"].get("mcd_db"),
        "rtf": a.get("rtf"), "eval_label": ck["label"],
    }


def _sentences(evals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The union of synthesized sentences over runs, in first-seen order: {key, set, id, text, real_audio}."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name, ev in evals.items():
        real = {(r["id"], r.get("text")): r for r in ev["real"]["utterances"]}
        for ck in ev["checkpoints"]:
            for u in ck["utterances"]:
                key = (u["set"], u["id"], u.get("text") or "")
                if key not in out:
                    out[key] = {"key": "|".join(key[:2]), "set": u["set"], "id": u["id"], "text": u.get("text") or "",
                                "real_audio": None}
                r = real.get((u["id"], u.get("text")))
                if u["set"] == "val" and r is not None and out[key]["real_audio"] is None:
                    out[key]["real_audio"] = f"runs/{name}/{r['audio']}"
    return list(out.values())


def _audio_table(point: dict[str, Any], sentences: list[dict[str, Any]], evals: dict[str, dict[str, Any]]) -> dict:
    """{sentence key: {run name: relative audio path or None}} for one matched point."""
    table: dict[str, dict[str, str | None]] = {}
    for s in sentences:
        row = {}
        for name, pr in point["runs"].items():
            ck = next(c for c in evals[name]["checkpoints"] if c["step"] == pr["step"])
            u = next((u for u in ck["utterances"] if u["set"] == s["set"] and u["id"] == s["id"]
                      and (u.get("text") or "") == s["text"]), None)
            row[name] = f"runs/{name}/{u['audio']}" if u else None
        table[s["key"]] = row
    return table


def compare_runs(cfg: CompareConfig, *, evaluator: Evaluator | None = None) -> dict[str, Any]:
    """Compare ``cfg.runs``; write compare.json, compare.html and plots into ``cfg.out``; return compare.json's content."""
    t_start = time.perf_counter()
    if len(cfg.runs) < 2:
        raise CompareError("give at least two RUN folders to compare (for one run use `voicetrain eval RUN`)")
    resolved = [str(Path(r).resolve()) for r in cfg.runs]
    if len(set(resolved)) != len(resolved):
        raise CompareError(f"the same RUN folder is given twice: {cfg.runs}")
    if cfg.points < 1:
        raise CompareError(f"--points must be at least 1, got {cfg.points}")
    if cfg.max_utterances < 1:
        raise CompareError(f"--max-utterances must be at least 1, got {cfg.max_utterances}")
    names = _names(cfg.runs, cfg.names)
    runs = [read_run(p, n) for p, n in zip(cfg.runs, names)]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    step_targets = [float(s) for s in cfg.steps] or auto_step_targets(runs, cfg.points)
    time_targets = [m * 60.0 for m in cfg.minutes] or auto_time_targets(runs, cfg.points)
    step_pts = match_points(runs, "step", step_targets)
    time_pts = match_points(runs, "time", time_targets)

    # ---- score every chosen checkpoint, one evaluate_run per run, one Evaluator for all
    evaluator = evaluator or Evaluator(asr=cfg.asr, asr_model=cfg.asr_model)
    evals: dict[str, dict[str, Any]] = {}
    for r in runs:
        wanted = sorted({p["choices"][r.name] for p in step_pts + time_pts})
        evals[r.name] = evaluate_run(RunEvalConfig(
            run=str(r.path), texts=cfg.texts, checkpoints=",".join(str(s) for s in wanted),
            max_utterances=cfg.max_utterances, out=str(out / "runs" / r.name), dnsmos=cfg.dnsmos,
            speaker_similarity=cfg.speaker_similarity, max_reference_wavs=cfg.max_reference_wavs,
            griffin_lim_iters=cfg.griffin_lim_iters, asr=cfg.asr, asr_model=cfg.asr_model,
            progress=cfg.progress), evaluator=evaluator)

    by_name = {r.name: r for r in runs}

    def section(points: list[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
        res = []
        for p in points:
            rows = {}
            for name, step in p["choices"].items():
                ck = next(c for c in evals[name]["checkpoints"] if c["step"] == step)
                rows[name] = _point_row(by_name[name], ck, p["target"], axis)
            entry = {"target_step": int(p["target"])} if axis == "step" else \
                {"target_wall_s": p["target"], "target_minutes": p["target"] / 60}
            res.append({**entry, "runs": rows})
        return res

    matched_steps = section(step_pts, "step")
    matched_time = section(time_pts, "time")
    sentences = _sentences(evals)
    for p in matched_steps + matched_time:
        p["audio"] = _audio_table(p, sentences, evals)

    result: dict[str, Any] = {
        "schema_version": COMPARE_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "out": str(out.resolve()),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress")},
        "runs": [{
            "name": r.name, "run": str(r.path.resolve()), **r.info,
            "checkpoints": [{"name": c.name, "step": c.step, "wall_s": r.wall_s.get(c.step)} for c in r.checkpoints],
            "val_curve": r.val,
            "real": evals[r.name]["real"]["means"],
            "eval": f"runs/{r.name}/eval.json", "report": f"runs/{r.name}/report.html",
        } for r in runs],
        "matched_steps": {
            "definition": "for each target step, each run's checkpoint with the closest step (ties: the later); "
                          "distance = checkpoint step - target",
            "points": matched_steps},
        "matched_time": {
            "definition": "for each target training wall time, each run's checkpoint whose wall time (metrics.csv "
                          "wall_s interpolated at its step) is closest; distance = its wall_s - target, seconds",
            "points": matched_time},
        "sentences": sentences,
        "asr": {"names": list(evaluator.asr_names), "note": evaluator.asr_note or None},
        "timings": {"load_seconds": dict(evaluator.load_seconds), "wall_seconds": None},
        "plots": {}, "report": "compare.html",
    }
    result["plots"] = write_plots(out, result)
    result["timings"]["wall_seconds"] = time.perf_counter() - t_start
    clean = json_ready(result)
    write_html(out, clean)
    atomic_write_text(out / "compare.json", json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
    return clean


# ----------------------------------------------------------------------------- plots

_METRICS = (  # (key, title, format)
    ("val_loss", "validation loss", "f3"),
    ("cer", "CER (lower is better)", "pct"),
    ("cer_pocketsphinx", "pocketsphinx CER (second opinion)", "pct"),
    ("speaker_similarity", "speaker cosine to target (higher is better)", "f3"),
    ("dnsmos_ovrl", "DNSMOS OVRL (higher is better)", "f2"),
)


def _plot_val_loss(result: dict[str, Any], path: Path) -> bool:
    from matplotlib.figure import Figure

    from voicetrain.evaluation.report import save_figure

    curves = [(r["name"], r["val_curve"]) for r in result["runs"] if r["val_curve"]]
    if not curves:
        return False
    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, pts in curves:
        ax1.plot([p["step"] for p in pts], [p["val_loss"] for p in pts], "o-", ms=3, label=name)
        tp = [(p["wall_s"] / 60, p["val_loss"]) for p in pts if p.get("wall_s") is not None]
        if tp:
            ax2.plot(*zip(*tp), "o-", ms=3, label=name)
    for ax, xl in ((ax1, "step"), (ax2, "training wall time (min)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("val/loss")
        ax.grid(alpha=0.3)
    ax1.set_title("validation loss vs steps", fontsize=10)
    ax2.set_title("validation loss vs wall time", fontsize=10)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.subplots_adjust(left=0.06, right=0.82, top=0.9, bottom=0.14, wspace=0.25)
    save_figure(fig, path)
    return True


def _plot_matched(points: list[dict[str, Any]], axis: str, run_names: list[str], path: Path) -> bool:
    from matplotlib.figure import Figure

    from voicetrain.evaluation.report import save_figure, style_panel

    panels = [(k, t) for k, t, _ in _METRICS if any(p["runs"][n].get(k) is not None for p in points for n in run_names)]
    if not points or not panels:
        return False
    fig = Figure(figsize=(3.4 * len(panels), 3.3))
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for n in run_names:
            xs = [p["target_step"] if axis == "step" else p["target_minutes"] for p in points]
            pts = [(x, p["runs"][n].get(key)) for x, p in zip(xs, points) if p["runs"][n].get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", ms=4, label=n)
        style_panel(ax, title, "target step" if axis == "step" else "target wall time (min)", legend=i == 0)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.16, wspace=0.35)
    save_figure(fig, path)
    return True


def write_plots(out: str | os.PathLike, result: dict[str, Any]) -> dict[str, str]:
    """plots/val_loss.png, plots/matched_steps.png, plots/matched_time.png; returns {name: relative path} of those drawn."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    names = [r["name"] for r in result["runs"]]
    made = {}
    if _plot_val_loss(result, out / "plots" / "val_loss.png"):
        made["val_loss"] = "plots/val_loss.png"
    if _plot_matched(result["matched_steps"]["points"], "step", names, out / "plots" / "matched_steps.png"):
        made["matched_steps"] = "plots/matched_steps.png"
    if _plot_matched(result["matched_time"]["points"], "time", names, out / "plots" / "matched_time.png"):
        made["matched_time"] = "plots/matched_time.png"
    return made


# ----------------------------------------------------------------------------- HTML

def write_html(out: str | os.PathLike, result: dict[str, Any]) -> Path:
    """compare.html in ``out`` from the compare.json content (all paths relative to ``out``)."""
    return write_page(Path(out) / "compare.html", "compare.html", r=result)
