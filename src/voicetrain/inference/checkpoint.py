"""Load voicetrain checkpoints without Lightning and without pickle.

A checkpoint is a Lightning checkpoint dict with a ``voicetrain`` entry holding the
run config, symbol table and feature statistics as plain types, so it loads on its
own with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voicetrain.config import SCHEMA_VERSION
from voicetrain.data.cache import FeatureStats
from voicetrain.models.registry import build_model
from voicetrain.text.symbols import SymbolTable
from voicetrain.voice_config import VoiceConfig, voice_from_run_config


class CheckpointError(ValueError):
    pass


def load_checkpoint_safe(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with pickle disabled; a damaged or foreign file gives a clear error."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a loadable voicetrain checkpoint ({type(e).__name__}: {e})") from None


@dataclass
class LoadedCheckpoint:
    path: Path
    voice: VoiceConfig
    model: torch.nn.Module
    symbols: SymbolTable
    stats: FeatureStats
    step: int
    run_config: dict[str, Any]
    """The training run's config as the checkpoint stores it (training/ reads it as a RunConfig)."""


def model_state_from_checkpoint(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    sd = ckpt.get("state_dict") or {}
    return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}


def load_model(path: str | os.PathLike) -> LoadedCheckpoint:
    path = Path(path)
    ckpt = load_checkpoint_safe(path)
    meta = ckpt.get("voicetrain")
    if not meta:
        raise CheckpointError(f"{path}: no 'voicetrain' metadata; is this a voicetrain checkpoint?")
    if meta.get("schema_version", 1) > SCHEMA_VERSION:
        raise CheckpointError(f"{path}: written by a newer voicetrain ({meta.get('version')}); upgrade voicetrain")
    voice = voice_from_run_config(meta["run_config"], f"{path}:run_config")
    symbols = SymbolTable(tuple(meta["symbols"]))
    stats = FeatureStats(**meta["stats"])
    model = build_model(voice.model, voice.model_config, len(symbols), voice.audio.n_mels, max(len(voice.speakers), 1))
    model.load_state_dict(model_state_from_checkpoint(ckpt))
    model.eval()
    return LoadedCheckpoint(path, voice, model, symbols, stats, int(ckpt.get("global_step", 0)), dict(meta["run_config"]))


_STEP_RE = re.compile(r"step=(\d+)")


def checkpoint_step(path: Path) -> int:
    m = _STEP_RE.search(path.name)
    return int(m.group(1)) if m else -1


_SCORE_RE = re.compile(r"-score=(-?\d+(?:\.\d+)?)\.ckpt$")


def quality_score_of(path: Path) -> float | None:
    """The quality score in a ``quality-step=N-score=S.ckpt`` name, else None."""
    m = _SCORE_RE.search(path.name)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path
    reason: str
    """Why this checkpoint, in words a user can act on."""


def choose_checkpoint(run_or_ckpt: str | os.PathLike, which: str = "best") -> CheckpointChoice:
    """Resolve a run folder (or a checkpoint path) to a checkpoint file, and say why it was chosen.

    ``which``: 'best', 'last', or a step number. 'best' takes, in order:

    1. the checkpoint recorded by `voicetrain eval --select-best` (RUN/selected_checkpoint.txt);
    2. the checkpoint training chose by quality (``quality-step=N-score=S.ckpt``: the latest validation
       within noise of the best speaker similarity - Whisper CER on fixed validation sentences, see
       training/quality.py);
    3. the lowest validation loss (``best-step=N.ckpt``: runs trained without quality tracking);
    4. the last checkpoint.
    """
    p = Path(run_or_ckpt)
    if p.is_file():
        return CheckpointChoice(p, "the checkpoint file given")
    ckdir = p / "checkpoints"
    if not ckdir.is_dir():
        raise FileNotFoundError(f"{p} is neither a checkpoint file nor a run folder with checkpoints/")
    ckpts = sorted(ckdir.glob("*.ckpt"), key=checkpoint_step)
    if not ckpts:
        raise FileNotFoundError(f"{ckdir} holds no checkpoints yet; train first (`voicetrain train`)")
    if which == "last":
        last = ckdir / "last.ckpt"
        return CheckpointChoice(last if last.exists() else ckpts[-1], "the last checkpoint (asked for)")
    if which == "best":
        selected = p / "selected_checkpoint.txt"
        if selected.exists():
            cand = ckdir / selected.read_text(encoding="utf-8").strip()
            if cand.exists():
                return CheckpointChoice(cand, f"selected by `voicetrain eval --select-best` ({selected.name})")
            import warnings
            warnings.warn(f"{selected} names {cand.name}, which no longer exists (rotated by later training?); "
                          "using the best checkpoint training kept. Re-run `voicetrain eval --select-best`.",
                          stacklevel=2)
        scored = [(checkpoint_step(c), quality_score_of(c), c) for c in ckdir.glob("quality-*.ckpt")]
        scored = [x for x in scored if x[1] is not None]
        if scored:  # one file normally; after an interrupted rotation, the later choice
            step, score, path = max(scored, key=lambda x: x[0])
            return CheckpointChoice(path, f"chosen by quality during training: step {step}, the latest validation "
                                          f"within noise of the best (score {score:.4f}: speaker similarity - Whisper "
                                          "CER on the validation sentences)")
        best = sorted(ckdir.glob("best-*.ckpt"), key=checkpoint_step)
        if best:
            return CheckpointChoice(best[-1], "lowest validation loss (this run was trained without quality tracking)")
        last = choose_checkpoint(p, "last").path
        return CheckpointChoice(last, "the last checkpoint (no quality or validation-loss best was kept)")
    if not which.isdigit():
        raise FileNotFoundError(f"checkpoint {which!r}: expected best, last or a step number")
    step = int(which)
    for c in ckpts:
        if checkpoint_step(c) == step:
            return CheckpointChoice(c, f"step {step} (asked for)")
    raise FileNotFoundError(f"no checkpoint for step {step} in {ckdir}; have: {[c.name for c in ckpts]}")


def find_checkpoint(run_or_ckpt: str | os.PathLike, which: str = "best") -> Path:
    """The checkpoint file :func:`choose_checkpoint` picks."""
    return choose_checkpoint(run_or_ckpt, which).path
