"""Result files: JSON-ready values (numpy scalars, paths, NaN -> null) and the few run settings eval reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from voicetrain.evaluation.checkpoints import RunEvalError


def run_info(path: Path) -> dict[str, Any]:
    """The few RUN/config.yaml keys eval needs (dataset, speakers), read leniently.

    Not through the strict RunConfig loader: eval must keep working on runs whose config
    holds keys of another voicetrain version; the checkpoints carry their own config.
    """
    import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RunEvalError(f"{path}: unreadable ({e}); pass --dataset DATASET") from None
    return data if isinstance(data, dict) else {}


def json_ready(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and paths converted, non-finite floats as None."""
    return nan_to_none(json.loads(json.dumps(obj, default=json_default)))


def nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj


def json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")

