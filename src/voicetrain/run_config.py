"""Run configuration: everything needed to reproduce a training run from its folder.

``RunConfig`` is saved as RUN/config.yaml before training starts and inside every
checkpoint, so a checkpoint loads on its own and ``voicetrain train --config
RUN/config.yaml`` reproduces the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from voicetrain.config import AudioConfig, TextConfig, check_ranges, finite

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
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
class TrainConfig:
    __removed_keys__ = ("max_frames_per_batch",)
    batch_size: int = 16
    max_steps: int = 20000
    max_minutes: Optional[float] = None
    """Wall-clock cap (Lightning's max_time); training stops cleanly and checkpoints."""
    accumulate: int = 1
    precision: str = "32-true"
    """Lightning precision: '32-true', 'bf16-mixed' (CPU/GPU), '16-mixed' (GPU)."""
    devices: str = "auto"
    accelerator: str = "auto"
    num_nodes: int = 1
    num_workers: int = 0
    """DataLoader workers. 0 on a 2-core machine: features are cached, loading is cheap."""
    threads: int = 0
    """torch intra-op threads. 0 = auto: 1 and all cores are both measured on real batches
    before training and the faster is used (on 2 shared cores, 2 threads can be slower)."""
    seed: int = 0
    overfit: int = 0
    """Train on this many utterances only (proves the pipeline can memorize)."""
    val_every_steps: int = 200
    checkpoint_every_steps: int = 200
    keep_last: int = 3
    sample_every_steps: int = 400
    """Synthesize the fixed validation sentences to TensorBoard and RUN/samples every N steps."""
    n_sample_sentences: int = 3
    log_every_steps: int = 10
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
        at_least_1 = (lambda v: v >= 1, "an integer >= 1")
        at_least_0 = (lambda v: v >= 0, "an integer >= 0")
        check_ranges(self, "train", {
            "batch_size": at_least_1, "max_steps": at_least_1, "accumulate": at_least_1,
            "max_minutes": (lambda v: v is None or (finite(v) and v > 0), "a number of minutes > 0 (or null)"),
            "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            "num_nodes": at_least_1, "num_workers": at_least_0, "threads": (lambda v: v >= 0, "0 (auto) or more"),
            "overfit": (lambda v: v >= 0, "0 (off) or a number of utterances"),
            "val_every_steps": at_least_1, "checkpoint_every_steps": at_least_1,
            "keep_last": (lambda v: v == -1 or v >= 1, "-1 (keep all) or an integer >= 1"),
            "sample_every_steps": at_least_1, "n_sample_sentences": at_least_0, "log_every_steps": at_least_1,
            "early_stopping_patience": (lambda v: v >= 0, "0 (off) or a number of validations"),
            "quality_sentences": (lambda v: v >= 0, "0 (off) or a number of sentences"),
            "quality_reference_clips": at_least_1,
            "snapshot_minutes": (lambda v: all(finite(m) and m > 0 for m in v), "minutes > 0"),
        })
    snapshot_minutes: list[float] = field(default_factory=list)
    """Also keep a checkpoint when training wall time passes each of these marks (minutes),
    saved as checkpoints/time=Mmin-step=N.ckpt: compare a voice after 1, 3, 5, 15 minutes."""


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
