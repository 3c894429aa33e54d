"""Typed configuration shared by every stage, with strict YAML load/save.

Every value has one home: sample rate, hop length and mel settings live in
:class:`AudioConfig` only; other configs reference it rather than copy it.
Unknown keys in a YAML file are an error (a typo must not silently fall back
to a default), and every saved file carries ``schema_version`` so that old
runs keep loading after an upgrade.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml

from voicetrain.fileio import atomic_write_text

SCHEMA_VERSION = 1

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


@dataclass(frozen=True)
class AudioConfig:
    """Signal settings shared by data preparation, training and synthesis."""

    sample_rate: int = 22050
    """Hz. All audio is resampled to this rate by ``prepare``."""
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    """Samples between frames: 256 at 22050 Hz is 11.6 ms, 86 frames per second."""
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    """Speech has little energy above 8 kHz; limiting the filterbank keeps bins useful."""
    f0_min: float = 60.0
    f0_max: float = 500.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass(frozen=True)
class TextConfig:
    language: str = "en-us"
    """espeak-ng language code used by phonemizer."""
    phonemizer: str = "espeak"
    """'espeak' (IPA through phonemizer) or 'chars' (lower-cased letters, no espeak needed)."""


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of the per-utterance quality checks run by ``prepare``."""

    min_seconds: float = 0.5
    max_seconds: float = 15.0
    clip_fraction: float = 0.001
    """An utterance with more than this fraction of samples at full scale is clipped."""
    min_snr_db: float = 15.0
    silence_dbfs: float = -55.0
    """RMS below this (dBFS) over the whole file counts as silence only."""
    rate_outlier_factor: float = 1.8
    """Phonemes/s further than this factor from the speaker's median flags a mismatched transcript."""
    target_lufs: float = -23.0
    trim_top_db: float = 40.0
    vad: str = "energy"
    """'energy' (librosa trim) or 'silero' (silero-vad model from its PyPI package)."""


def check_ranges(obj: Any, section: str, rules: dict[str, tuple[typing.Callable[[Any], bool], str]]) -> None:
    """Raise ConfigError naming ``section.field``, its value and the valid range for the first rule broken.

    Called from the config dataclasses' ``__post_init__``: every way of building a config (YAML, CLI flags
    through ``dataclasses.replace``, code) meets the same ranges.
    """
    for name, (ok, expected) in rules.items():
        value = getattr(obj, name)
        valid = False
        try:
            valid = bool(ok(value))
        except (TypeError, ValueError):
            pass
        if not valid:
            raise ConfigError(f"{section}.{name}: {value!r} is out of range; expected {expected}")


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# common range rules for check_ranges
POSITIVE = (lambda v: v >= 1, "an integer >= 1")
AT_LEAST_0 = (lambda v: v >= 0, "an integer >= 0")
PROBABILITY = (lambda v: finite(v) and 0 <= v <= 1, "a number in [0, 1]")
WEIGHT = (lambda v: finite(v) and v >= 0, "a finite number >= 0")

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")


@dataclass(frozen=True)
class LoopConfig:
    """The training loop's settings (training/loop.py), shared by the acoustic ``TrainConfig`` and the
    ``VocoderTrainConfig``: one home and one range check; each subclass sets its own defaults and adds its fields."""

    batch_size: int = 16
    max_steps: int = 20000
    max_minutes: float | None = None
    """Wall-clock cap (Lightning's max_time); training stops cleanly and checkpoints."""
    precision: str = "32-true"
    """Lightning precision: '32-true', 'bf16-mixed' (CPU/GPU), '16-mixed' (GPU)."""
    devices: str = "auto"
    accelerator: str = "auto"
    num_workers: int = 0
    """DataLoader workers. 0 on a 2-core machine: features are cached, loading is cheap."""
    threads: int = 0
    """torch intra-op threads. 0 = auto: 1 and all cores are both measured on real batches
    before training and the faster is used (on 2 shared cores, 2 threads can be slower)."""
    seed: int = 0
    val_every_steps: int = 200
    checkpoint_every_steps: int = 200
    keep_last: int = 3
    sample_every_steps: int = 400
    """Synthesize (or vocode) the validation samples to TensorBoard and RUN/samples every N steps."""
    log_every_steps: int = 10
    snapshot_minutes: list[float] = field(default_factory=list)
    """Also keep a checkpoint when training wall time passes each of these marks (minutes),
    saved as checkpoints/time=Mmin-step=N.ckpt: compare a voice after 1, 3, 5, 15 minutes."""

    def __post_init__(self) -> None:
        at_least_1 = (lambda v: v >= 1, "an integer >= 1")
        check_ranges(self, "train", {
            "batch_size": at_least_1, "max_steps": at_least_1,
            "max_minutes": (lambda v: v is None or (finite(v) and v > 0), "a number of minutes > 0 (or null)"),
            "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            "num_workers": (lambda v: v >= 0, "an integer >= 0"), "threads": (lambda v: v >= 0, "0 (auto) or more"),
            "val_every_steps": at_least_1, "checkpoint_every_steps": at_least_1,
            "keep_last": (lambda v: v == -1 or v >= 1, "-1 (keep all) or an integer >= 1"),
            "sample_every_steps": at_least_1, "log_every_steps": at_least_1,
            "snapshot_minutes": (lambda v: all(finite(m) and m > 0 for m in v), "minutes > 0"),
        })


@dataclass(frozen=True)
class AdamWConfig:
    """AdamW settings shared by the acoustic ``OptimConfig`` and the ``VocoderOptimConfig``: one home and one
    range check; each subclass sets its own defaults (and the acoustic one adds its warm-up)."""

    __decays__: typing.ClassVar[tuple[str, ...]] = ("cosine", "constant")
    lr: Optional[float] = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    decay: str = "constant"
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights (0 = off), used for validation, samples and every
    checkpoint's weights (the live weights are kept for resuming). The decay ramps up as (1 + n) / (10 + n)
    to this cap."""

    def __post_init__(self) -> None:
        check_ranges(self, "optim", {
            "lr": (lambda v: v is None or (finite(v) and v >= 0), "a finite number >= 0"),
            "weight_decay": (lambda v: finite(v) and v >= 0, "a finite number >= 0"),
            "betas": (lambda v: len(v) == 2 and all(finite(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
            "decay": (lambda v: v in self.__decays__, f"one of {', '.join(self.__decays__)}"),
            "grad_clip": (lambda v: finite(v) and v >= 0, "a finite number >= 0 (0 = off)"),
            "ema_decay": (lambda v: finite(v) and 0 <= v < 1, "a number in [0, 1) (0 = off)"),
        })


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, recursively and strictly.

    Hooks a config class may define: ``__removed_keys__`` (keys older versions wrote that no longer mean
    anything: dropped, so old runs load), ``__migrate__(data) -> data`` (an older shape rewritten into this
    one), and ``__resolvers__`` (field -> ``f(data, value, where)``: a field whose type depends on its
    siblings, such as a model's typed config, which depends on ``model`` and ``preset``).
    """
    data = dict(data or {})
    data.pop("schema_version", None)
    for old in getattr(cls, "__removed_keys__", ()):
        data.pop(old, None)
    migrate = getattr(cls, "__migrate__", None)
    if migrate is not None:
        data = migrate(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(repr(u) for u in unknown)} in {where or cls.__name__}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    resolvers = getattr(cls, "__resolvers__", {})
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        kwargs[name] = resolvers[name](data, value, path) if name in resolvers else _coerce(value, hints[name], path)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error says what is wrong
            return _coerce(value, options[0], path)
        for a in options:
            try:
                return _coerce(value, a, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not match {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, path) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if _is_dataclass_type(tp):  # a nested section, or an optional one (``FinetuneConfig | None``)
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp in (int, float, bool, str):
        raise ConfigError(f"{path} must be {tp.__name__}, got {value!r}")
    return value


def preset_config(registry: typing.Mapping[str, Any], kind: str, name: str, preset: str,
                  overrides: dict[str, Any] | None = None, where: str = "") -> Any:
    """The config dataclass of registry entry ``name``: its ``preset`` with ``overrides`` applied.

    ``registry`` maps names to entries with ``config_cls`` and ``presets`` (the model and
    vocoder registries); ``kind`` ("model", "vocoder") names them in errors. Unknown names,
    presets and override keys are ConfigErrors that list what exists.
    """
    at = f"{where}: " if where else ""
    if name not in registry:
        raise ConfigError(f"{at}unknown {kind} {name!r}; available: {', '.join(sorted(registry))}")
    entry = registry[name]
    if preset not in entry.presets:
        raise ConfigError(f"{at}unknown preset {preset!r} for {kind} {name}; available: {', '.join(entry.presets)}")
    if not isinstance(overrides or {}, dict):
        raise ConfigError(f"{where or kind + '_config'} must be a mapping, got {overrides!r}")
    base = dataclasses.asdict(entry.presets[preset])
    base.update(overrides or {})
    return from_dict(entry.config_cls, base, where=f"{where or kind + '_config'} ({name})")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain types only (what YAML, JSON and a pickle-free checkpoint hold). A config class may define
    ``__saved__(d) -> d`` to store a field differently (RunConfig stores its model's overrides of the preset)."""
    d = _plain(dataclasses.asdict(obj))
    saved = getattr(obj, "__saved__", None)
    return saved(d) if saved is not None else d


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    data = {"schema_version": SCHEMA_VERSION, **to_dict(obj)}
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at top level")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path} has schema_version {version}, newer than this voicetrain ({SCHEMA_VERSION}); upgrade voicetrain"
        )
    try:
        return from_dict(cls, data, where=str(path))
    except ConfigError as e:  # a range check raised inside a dataclass does not know the file
        raise (e if str(path) in str(e) else ConfigError(f"{path}: {e}")) from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``'optim.lr=1e-3'`` -> ``('optim.lr', 0.001)``: the value is read as YAML (numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-3 or train.batch_size=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({e})") from None
    if isinstance(value, str):  # YAML 1.1 reads '1e-3' (no dot) as a string
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.strip(), value


def with_overrides(obj: T, assignments: "typing.Iterable[str | tuple[str, Any]]", where: str = "--set") -> T:
    """``obj`` (a config dataclass) with dotted assignments applied through the strict loader.

    Every flag and ``--set section.key=value`` goes through here, so an unknown key, a wrong type or an
    out-of-range value is the same named ConfigError as in a YAML file, and no default is copied anywhere.
    """
    data = to_dict(obj)
    for item in assignments:
        key, value = parse_assignment(item) if isinstance(item, str) else item
        *sections, name = key.split(".")
        node = data
        for i, part in enumerate(sections):
            if not isinstance(node.get(part), dict):
                here = ".".join(sections[:i + 1])
                valid = sorted(k for k, v in node.items() if isinstance(v, dict))
                raise ConfigError(f"{where} {key}: {here!r} is not a section; sections: {', '.join(valid)}")
            node = node[part]
        if isinstance(item, str) and isinstance(node.get(name), str) and not isinstance(value, str):
            value = item.partition("=")[2].strip()  # a text field keeps the text: devices=2, precision=32
        node[name] = value
    return from_dict(type(obj), data, where=where)


__all__ = [
    "AudioConfig",
    "TextConfig",
    "QCConfig",
    "LoopConfig",
    "AdamWConfig",
    "ConfigError",
    "from_dict",
    "to_dict",
    "save_yaml",
    "load_yaml",
    "with_overrides",
]
