"""Run configuration: everything needed to reproduce a training run from its folder.

``RunConfig`` is saved as RUN/config.yaml before training starts and inside every
checkpoint, so a checkpoint loads on its own and ``voicetrain train --config
RUN/config.yaml`` reproduces the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from voicetrain.config import AdamWConfig, AudioConfig, LoopConfig, TextConfig, check_ranges
from voicetrain.models.registry import ModelConfig, preset_overrides
from voicetrain.voice_config import VOICE_KEYS, VoiceConfig, resolve_model_config, typed_model_config

DECAYS = ("noam", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig(AdamWConfig):
    """The acoustic model's AdamW: :class:`~voicetrain.config.AdamWConfig` with its defaults, plus warm-up."""

    __decays__ = DECAYS
    lr: Optional[float] = None
    """Peak learning rate of AdamW, reached after ``warmup_steps``. None = the model's own
    (fastspeech2 3e-3, tacotron2 1e-3; see models/registry.py); the run's config.yaml
    records the value used."""
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 200
    """Short warm-up: small models on small data are stable at lr 1e-3 after a few hundred steps."""
    decay: str = "noam"
    """'noam' (inverse square root after warm-up), 'cosine' (to 10% at max_steps) or 'constant'."""
    grad_clip: float = 1.0
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "optim", {"warmup_steps": (lambda v: v >= 0, "an integer >= 0")})


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """The acoustic loop: :class:`~voicetrain.config.LoopConfig` plus accumulation, multi-node, overfitting,
    samples, early stopping and quality tracking."""

    __removed_keys__ = ("max_frames_per_batch",)
    accumulate: int = 1
    num_nodes: int = 1
    overfit: int = 0
    """Train on this many utterances only (proves the pipeline can memorize)."""
    n_sample_sentences: int = 3
    early_stopping_patience: int = 0
    """With quality tracking: stop when quality has been worse than the best validation's beyond noise for
    this many validations in a row. Without it: when validation loss has not improved for this many
    validations. 0 = off."""
    quality_sentences: int = 8
    """Validation sentences synthesized and scored (Whisper CER, speaker similarity) at every validation;
    the latest checkpoint within noise of the best quality is kept as checkpoints/quality-step=N-score=S.ckpt
    and used by default. 0 = off (checkpoints are then
    chosen by validation loss). Needs the eval extra; without it training says so once and goes on."""
    quality_dnsmos: bool = False
    """Also log DNSMOS of those sentences (not part of the score; ~0.3 s per sentence)."""
    quality_reference_clips: int = 10
    """Training clips per speaker whose mean speaker embedding is the target of speaker similarity."""
    short_first_epochs: int = 0
    """Curriculum: for this many epochs, train on the shortest utterances only, a share growing linearly from 30%
    to all of them (each epoch still shuffles its length buckets). 0 = off."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least_1 = (lambda v: v >= 1, "an integer >= 1")
        check_ranges(self, "train", {
            "accumulate": at_least_1, "num_nodes": at_least_1,
            "overfit": (lambda v: v >= 0, "0 (off) or a number of utterances"),
            "n_sample_sentences": (lambda v: v >= 0, "an integer >= 0"),
            "early_stopping_patience": (lambda v: v >= 0, "0 (off) or a number of validations"),
            "quality_sentences": (lambda v: v >= 0, "0 (off) or a number of sentences"),
            "quality_reference_clips": at_least_1,
            "short_first_epochs": (lambda v: v >= 0, "0 (off) or a number of epochs"),
        })


STRATEGIES = ("speaker-embedding", "bitfit", "freeze-encoder", "full")
SPEAKER_INITS = ("nearest", "mean")


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning section of a run (``finetune:`` in RUN/config.yaml; absent for a run trained from
    scratch): only what fine-tuning adds. Its loop is the run's ``train`` section, its optimizer ``optim``."""

    init_from: str = ""
    """The base checkpoint or bundle the run started from (``--from``, resolved)."""
    strategy: str = "full"
    """``full`` is the measured best at 3 minutes of audio and 3 minutes of training (bench/finetune.py)."""
    speaker_init: str = "nearest"
    """How a new speaker's row of the speaker table starts: ``nearest`` base speaker, or ``mean`` of the rows."""
    speaker_name: str = ""
    """Name for the dataset's speaker in the voice's speaker table (single-speaker datasets)."""
    freeze: list[str] = field(default_factory=list)
    """Extra module or group names to freeze (``--freeze``), on top of the strategy's."""
    frozen: list[str] = field(default_factory=list)
    """Module names whose parameters are frozen (the strategy's and ``freeze``, resolved against the model)."""
    trainable_speakers: list[str] = field(default_factory=list)
    """When non-empty, only these rows of the speaker table receive gradient updates."""
    max_new_symbols: int = 3
    """Phoneme symbols the base never saw that fine-tuning may add as new rows; more is an error."""

    def __post_init__(self) -> None:
        check_ranges(self, "finetune", {
            "strategy": (lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
            "speaker_init": (lambda v: v in SPEAKER_INITS, f"one of {', '.join(SPEAKER_INITS)}"),
            "max_new_symbols": (lambda v: v >= 0, "an integer >= 0"),
        })


_OLD_FINETUNE_KEYS = {"init_from": "init_from", "frozen": "frozen", "trainable_speakers": "trainable_speakers",
                      "finetune_strategy": "strategy"}


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Run configs written before the ``finetune`` section kept its fields at the top level."""
    old = {k: data.pop(k) for k in list(data) if k in _OLD_FINETUNE_KEYS}
    if any(old.values()) and "finetune" not in data:
        data["finetune"] = {_OLD_FINETUNE_KEYS[k]: v for k, v in old.items() if v}
        data["finetune"].setdefault("strategy", "full")
    return data


@dataclass(frozen=True)
class RunConfig:
    """The full description of a run: the voice's settings (:class:`VoiceConfig`'s fields, at the top level),
    the loop, the optimizer, the dataset, and fine-tuning when the run is one."""

    __migrate__ = staticmethod(_migrate)
    __resolvers__ = {"model_config": lambda data, value, where: resolve_model_config(RunConfig, data, value, where)}
    model: str = "fastspeech2"
    preset: str = "cpu"
    model_config: ModelConfig = None  # type: ignore[assignment]
    """The model's typed config: ``preset`` with the file's ``model_config`` keys on top. Saved as only the
    values that differ from the preset, so ``--preset`` on an earlier run's config still means that size;
    change ``preset`` through ``with_overrides`` (a ``dataclasses.replace`` keeps the old sizes)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Copied from the dataset at the start of a run (the dataset is the source of truth)."""
    text: TextConfig = field(default_factory=TextConfig)
    dataset: str = ""
    speakers: list[str] = field(default_factory=list)
    """Speaker table: index = speaker id. Fine-tuning appends to it."""
    vocoder: str = "griffin-lim"
    speaker_map: dict[str, str] = field(default_factory=dict)
    """Dataset speaker name -> speaker-table name (fine-tuning with --speaker-name)."""
    finetune: Optional[FinetuneConfig] = None

    def __post_init__(self) -> None:
        typed_model_config(self)

    def __saved__(self, d: dict[str, Any]) -> dict[str, Any]:
        d["model_config"] = preset_overrides(self.model, self.preset, self.model_config)
        if d["finetune"] is None:
            del d["finetune"]
        return d

    @property
    def voice(self) -> VoiceConfig:
        """What a bundle or an export of this run needs to speak."""
        return VoiceConfig(**{k: getattr(self, k) for k in VOICE_KEYS})
