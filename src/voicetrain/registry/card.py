"""The model card: what a voice is, what it was trained on and how well it did.

Every value is gathered from files the run already wrote (config.yaml inside the
checkpoint, result.json, metrics.csv, eval/eval.json, the dataset's manifests and
dataset.yaml); nothing is typed in by hand. Missing sources are recorded as null.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from voicetrain.config import to_dict
from voicetrain.voice_config import VoiceConfig


def dataset_fingerprint(dataset_dir: Path) -> dict[str, Any]:
    """sha256 over the train and val manifests (content, not paths), plus hours and speakers."""
    out: dict[str, Any] = {"path": str(dataset_dir), "reachable": dataset_dir.is_dir(), "sha256": None,
                           "hours": None, "speakers": None, "n_train": None, "n_val": None}
    if not dataset_dir.is_dir():
        return out
    h = hashlib.sha256()
    found = False
    for split in ("train", "val"):
        p = dataset_dir / f"{split}.jsonl"
        if p.is_file():
            found = True
            h.update(split.encode() + b"\0" + p.read_bytes() + b"\0")
    out["sha256"] = h.hexdigest() if found else None
    info_path = dataset_dir / "dataset.yaml"
    if info_path.is_file():
        try:
            info = yaml.safe_load(info_path.read_text(encoding="utf-8")) or {}
            out.update(hours=info.get("hours"), speakers=info.get("speakers"), n_train=info.get("n_train"),
                       n_val=info.get("n_val"), source=info.get("source"))
        except yaml.YAMLError:
            pass
    return out


def training_summary(run: Path, step: int | None = None) -> dict[str, Any]:
    """The run's totals (steps, wall time, final losses: the run as it stands, which may have trained on past
    the registered checkpoint) and the losses at the checkpoint's ``step``, from metrics.csv rows up to it."""
    out: dict[str, Any] = {"steps": None, "wall_seconds": None, "final_train_loss": None, "final_val_loss": None,
                           "stopped_because": None, "metrics_rows": 0, "last_metrics": None,
                           "train_loss_at_checkpoint": None, "val_loss_at_checkpoint": None}
    rp = run / "result.json"
    if rp.is_file():
        try:
            r = json.loads(rp.read_text(encoding="utf-8"))
            for k in ("steps", "wall_seconds", "final_train_loss", "final_val_loss", "stopped_because"):
                out[k] = r.get(k)
        except ValueError:
            pass
    mp = run / "metrics.csv"
    if mp.is_file():
        with open(mp, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out["metrics_rows"] = len(rows)
        last, at_ckpt = _latest_values(rows), _latest_values(
            [r for r in rows if step is None or _as_float(r.get("step")) <= step])
        out["last_metrics"] = last or None
        out["train_loss_at_checkpoint"] = at_ckpt.get("train/loss")
        out["val_loss_at_checkpoint"] = at_ckpt.get("val/loss")
    return out


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")


def _latest_values(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The latest non-empty value of every column."""
    last: dict[str, Any] = {}
    for row in rows:
        for k, v in row.items():
            if k and v not in (None, ""):
                try:
                    last[k] = float(v)
                except ValueError:
                    last[k] = v
    return last


def _eval_summary(run: Path, checkpoint: Path) -> dict[str, Any] | None:
    ep = run / "eval" / "eval.json"
    if not ep.is_file():
        return None
    try:
        ev = json.loads(ep.read_text(encoding="utf-8"))
    except ValueError:
        return None
    cks = ev.get("checkpoints") or []
    match = [c for c in cks if Path(str(c.get("path", ""))).name == checkpoint.name or c.get("name") == checkpoint.name]
    pick = match[0] if match else None
    keep = ("name", "step", "val", "texts", "all", "score")
    return {
        "file": str(ep), "created": ev.get("created"),
        "checkpoint": {k: pick.get(k) for k in keep} if pick else None,
        "checkpoint_evaluated": bool(pick),
        "real_recordings": {k: v for k, v in (ev.get("real") or {}).items() if k != "utterances"},
        "selection": ev.get("selection"),
    }


def build_card(*, name: str, version: str, run: Path | None, checkpoint: Path, step: int, voice: VoiceConfig,
               training: dict[str, Any], n_parameters: int, created: str, package_version: str) -> dict[str, Any]:
    """``training``: the run's config as its checkpoint stores it (optim, train, dataset, finetune)."""
    dataset = dataset_fingerprint(Path(training["dataset"])) if training.get("dataset") else None
    ft = training.get("finetune") or training  # configs before the finetune section kept its keys at the top
    return {
        "name": name, "version": version, "created": created, "voicetrain_version": package_version,
        "architecture": {"model": voice.model, "preset": voice.preset, "parameters": n_parameters,
                         "hyperparameters": dataclasses.asdict(voice.model_config),
                         "vocoder": voice.vocoder},
        "training": {"run": str(run) if run else None, "checkpoint": checkpoint.name, "checkpoint_step": step,
                     "optim": training.get("optim"), "train": training.get("train"),
                     **(training_summary(run, step) if run else {})},
        "base_model": ft.get("init_from") or None,
        "frozen": list(ft.get("frozen") or []),
        "dataset": dataset,
        "speakers": list(voice.speakers),
        "audio": to_dict(voice.audio), "text": to_dict(voice.text),
        "evaluation": _eval_summary(run, checkpoint) if run else None,
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def render_markdown(card: dict[str, Any]) -> str:
    a, t, d, e = card["architecture"], card["training"], card.get("dataset") or {}, card.get("evaluation")
    lines = [
        f"# {card['name']} {card['version']}", "",
        f"Created {card['created']} with voicetrain {card['voicetrain_version']}.", "",
        *([f"Note: {card['note']}", ""] if card.get("note") else []),
        "## Model", "",
        f"- architecture: {a['model']} (preset `{a['preset']}`), {a['parameters']:,} parameters, vocoder {a['vocoder']}",
        f"- base model: {card['base_model'] or 'none (trained from scratch)'}",
        f"- speakers: {', '.join(card['speakers']) or '—'}",
        f"- audio: {card['audio']['sample_rate']} Hz, {card['audio']['n_mels']} mel bins, hop {card['audio']['hop_length']}",
        f"- text: {card['text']['phonemizer']} ({card['text']['language']})", "",
        "| hyperparameter | value |", "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in a["hyperparameters"].items()], "",
        "## Training", "",
        f"- run: `{t.get('run')}`, checkpoint `{t['checkpoint']}` (step {t['checkpoint_step']})",
        f"- at the checkpoint: train loss {_fmt(t.get('train_loss_at_checkpoint'))}, "
        f"val loss {_fmt(t.get('val_loss_at_checkpoint'))}",
        f"- the run in all: {_fmt(t.get('steps'))} steps, {_fmt(t.get('wall_seconds'))} s; at its end: train loss "
        f"{_fmt(t.get('final_train_loss'))}, val loss {_fmt(t.get('final_val_loss'))}",
        f"- optimizer: {json.dumps(t['optim'])}", "",
        "## Data", "",
        f"- dataset: `{d.get('path')}` ({'reachable' if d.get('reachable') else 'not reachable when registered'})",
        f"- fingerprint (sha256 of train+val manifests): `{_fmt(d.get('sha256'))}`",
        f"- hours: {_fmt(d.get('hours'))}, utterances: {_fmt(d.get('n_train'))} train / {_fmt(d.get('n_val'))} val", "",
        "## Evaluation", "",
    ]
    if e and e.get("checkpoint"):
        score = e["checkpoint"].get("score") or {}
        lines += [f"- from `{e['file']}`: CER {_fmt(score.get('cer'))}, MCD {_fmt(score.get('mcd_db'))} dB"]
    elif e:
        lines += [f"- `{e['file']}` exists but does not cover this checkpoint"]
    else:
        lines += ["- not evaluated (run `voicetrain eval RUN` before `models add`)"]
    return "\n".join(lines) + "\n"
