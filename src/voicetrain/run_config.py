"""Run configuration: everything needed to reproduce a training run from its folder.

``RunConfig`` is saved as RUN/config.yaml before training starts and inside every
checkpoint, so a checkpoint loads on its own and ``voicetrain train --config
RUN/config.yaml`` reproduces the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from voicetrain.config import AudioConfig, LoopConfig, TextConfig, check_ranges, finite

DECAYS = ("noam", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
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
    """Keep an exponential moving average of the weights, used for validation, samples and
    every checkpoint's weights (the live weights are kept for resuming). The decay ramps up
    as (1 + n) / (10 + n) to this cap. 0 = off."""

    def __post_init__(self) -> None:
        check_ranges(self, "optim", {
            "lr": (lambda v: v is None or (finite(v) and v >= 0), "a finite number >= 0 (or null: the model's own)"),
            "weight_decay": (lambda v: finite(v) and v >= 0, "a finite number >= 0"),
            "betas": (lambda v: len(v) == 2 and all(finite(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
            "warmup_steps": (lambda v: v >= 0, "an integer >= 0"),
            "decay": (lambda v: v in DECAYS, f"one of {', '.join(DECAYS)}"),
            "grad_clip": (lambda v: finite(v) and v >= 0, "a finite number >= 0 (0 = off)"),
            "ema_decay": (lambda v: finite(v) and 0 <= v < 1, "a number in [0, 1) (0 = off)"),
        })


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
        })


@dataclass(frozen=True)
class RunConfig:
    """The full description of a run."""

    model: str = "fastspeech2"
    preset: str = "cpu"
    model_config: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model's config dataclass fields, on top of ``preset``."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Copied from the dataset at the start of a run (the dataset is the source of truth)."""
    text: TextConfig = field(default_factory=TextConfig)
    dataset: str = ""
    speakers: list[str] = field(default_factory=list)
    """Speaker table: index = speaker id. Fine-tuning appends to it."""
    vocoder: str = "griffin-lim"
    init_from: str = ""
    """Base checkpoint a fine-tuned run started from."""
    frozen: list[str] = field(default_factory=list)
    """Module names whose parameters are frozen."""
    trainable_speakers: list[str] = field(default_factory=list)
    """When non-empty, only these rows of the speaker table receive gradient updates."""
    speaker_map: dict[str, str] = field(default_factory=dict)
    """Dataset speaker name -> speaker-table name (fine-tuning with --speaker-name)."""
    finetune_strategy: str = ""
    """'speaker-embedding', 'freeze-encoder', 'full' or '' for a run trained from scratch."""
