"""Vocoder run configuration: everything needed to reproduce a ``voicetrain train-vocoder`` run.

``VocoderRunConfig`` is saved as VOCODER_RUN/config.yaml before training starts and
inside every checkpoint (plain types only), like :class:`voicetrain.run_config.RunConfig`
for acoustic runs; ``voicetrain train-vocoder DATASET --config VOCODER_RUN/config.yaml``
reproduces the run. Synthesis needs only the generator's part (``model``, ``preset``,
``model_config``, ``audio``), which checkpoints also carry on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicetrain.config import AdamWConfig, AudioConfig, LoopConfig, check_ranges, finite


@dataclass(frozen=True)
class VocoderLossConfig:
    """Weights of the generator's loss terms (defaults from Vocos, plus the multi-resolution STFT loss)."""

    mel_weight: float = 45.0
    """Log-mel L1 (HiFi-GAN's and Vocos' 45): the term that makes the output follow the mel."""
    stft_weight: float = 10.0
    """Multi-resolution STFT loss (spectral convergence + log-magnitude L1). It supervises the band above
    the mel's f_max (8 kHz); a third of the mel weight keeps its noisy fine structure from dominating."""
    stft_resolutions: list[list[int]] = field(default_factory=lambda: [[512, 128, 512], [1024, 256, 1024],
                                                                       [2048, 512, 2048]])
    """(n_fft, hop, window) of each STFT loss resolution (Parallel WaveGAN's three)."""
    adversarial_weight: float = 1.0
    """Hinge generator loss of the multi-period discriminator."""
    feature_matching_weight: float = 1.0
    """L1 between discriminator activations on real and generated audio."""
    mrd_weight: float = 0.1
    """Scale of the multi-resolution discriminator's adversarial and feature-matching terms (Vocos' 0.1)."""
    gan_start_step: int = 2000
    """Steps trained on the mel + STFT losses alone before the discriminators join (Parallel WaveGAN's
    generator pre-training). On this CPU a reconstruction-only step costs ~1/5 of a GAN step (0.12 vs 0.6 s
    at batch 16), so 2000 of them (~4 minutes) get the generator following the mel cheaply; the GAN then
    spends its steps on what only it fixes: phase coherence and the buzz of over-smoothed output."""


@dataclass(frozen=True)
class VocoderOptimConfig(AdamWConfig):
    """The GAN's AdamW (generator and discriminators): :class:`~voicetrain.config.AdamWConfig` with Vocos'
    defaults; no warm-up."""

    lr: float = 5e-4
    """AdamW learning rate of generator and discriminators (Vocos' 5e-4)."""
    betas: list[float] = field(default_factory=lambda: [0.8, 0.9])
    """GAN-typical low beta1 (HiFi-GAN 0.8): momentum lags behind a moving adversary."""
    weight_decay: float = 0.01
    decay: str = "constant"
    """'constant', or 'cosine' (to 10% at ``train.max_steps``; for step-capped runs only)."""
    grad_clip: float = 100.0
    """Gradient norm cap per network (0 = off). Generous: only stops a blow-up, never slows normal steps."""
    ema_decay: float = 0.999
    """Exponential moving average of the weights (0 = off), with the acoustic training's warm-up ramp
    (decay (1 + n) / (10 + n), capped here). A GAN generator's quality oscillates with its adversary from
    one checkpoint to the next; the average is what validation, samples and synthesis use (every
    checkpoint's ``state_dict``), the live weights go on training (``current_model_state``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "optim", {"lr": (lambda v: finite(v) and v >= 0, "a finite number >= 0")})


@dataclass(frozen=True)
class VocoderTrainConfig(LoopConfig):
    """The GAN's loop: :class:`~voicetrain.config.LoopConfig` with a vocoder's defaults, plus segments and
    validation size. Precision '32-true' or 'bf16-mixed' (16-mixed is refused: the discriminator steps bypass
    Lightning's grad scaler)."""

    max_steps: int = 1_000_000
    val_every_steps: int = 500
    checkpoint_every_steps: int = 500
    sample_every_steps: int = 1000
    segment_frames: int = 32
    """Random training segments of this many mel frames (32 x 256 = 8192 samples, 0.37 s at 22.05 kHz):
    short segments keep a CPU step cheap; the generator is convolutional, so it runs on any length."""
    n_val_utterances: int = 4
    """Validation utterances (whole, from the dataset's val split): their log-mel L1 picks the best checkpoint."""
    val_max_frames: int = 400
    """Validation utterances are cut to this many frames (4.6 s) to keep validation quick."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "train", {"segment_frames": (lambda v: v >= 2, "an integer >= 2"),
                                     "n_val_utterances": (lambda v: v >= 1, "an integer >= 1"),
                                     "val_max_frames": (lambda v: v >= 2, "an integer >= 2")})


@dataclass(frozen=True)
class VocoderRunConfig:
    """The full description of a vocoder run."""

    model: str = "vocos"
    preset: str = "cpu"
    """Generator size (see ``voicetrain.vocoders.vocos.PRESETS``); also picks the discriminator preset."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Overrides of the generator's config fields, on top of ``preset``."""
    discriminator_config: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``DiscriminatorConfig`` fields, on top of ``preset``."""
    loss: VocoderLossConfig = field(default_factory=VocoderLossConfig)
    optim: VocoderOptimConfig = field(default_factory=VocoderOptimConfig)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Copied from the dataset at the start of a run (the dataset is the source of truth)."""
    dataset: str = ""
    on_generated: str = ""
    """Acoustic RUN (or checkpoint) whose teacher-forced mels replace the real ones as input ('' = real mels)."""
    init_from: str = ""
    """Vocoder checkpoint this run started from (``--from``)."""
