"""FastSpeech 2 with a learned aligner (no external aligner), sized for a CPU by default.

Phoneme encoder and mel decoder are feed-forward Transformer stacks; the variance
adaptor predicts per-phoneme duration, pitch (phoneme-averaged, speaker-normalized
log-F0) and energy, and adds their embeddings before upsampling (FastPitch-style
phoneme-level variances, which train faster and more stably than frame-level ones).
Durations come from the aligner in :mod:`voicetrain.models.aligner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from voicetrain.config import AT_LEAST_0, POSITIVE, PROBABILITY, WEIGHT, check_ranges
from voicetrain.models.aligner import (
    AlignmentEncoder, beta_binomial_log_prior, bin_loss, forward_sum_loss, gaussian_log_likelihood, hard_alignment,
    monotonic_path)
from voicetrain.models.layers import (
    ConvStack, FFTStack, MultiHeadSelfAttention, VariancePredictor, average_by_duration, regulate_length, sequence_mask)


@dataclass(frozen=True)
class FastSpeech2Config:
    """Hyperparameters. The default is the CPU preset; see :data:`PRESETS` for others."""

    hidden: int = 160
    encoder_layers: int = 2
    decoder_layers: int = 4
    heads: int = 2
    ff_dim: int = 320
    """Channels of the convolutional feed-forward inside each FFT block."""
    ff_kernel: int = 3
    dropout: float = 0.1
    """Dropout of the encoder and decoder, reached at the end of ``dropout_ramp_steps``."""
    predictor_dropout: float = 0.5
    """Dropout of the duration, pitch and energy predictors (FastSpeech 2's 0.5), same ramp."""
    dropout_ramp_steps: list[int] = field(default_factory=lambda: [300, 900])
    """Curriculum dropout (Morerio et al., 2017): no dropout until the first step, then a linear
    ramp to the full rates at the second. Measured on the 270-utterance demo voice: without
    dropout the first minutes learn fastest, but from ~800 steps the validation mel loss stalls
    while the training loss keeps falling, and the pitch predictor overfits from step ~200
    (BENCHMARKS.md). [0, 0] = full dropout from the start."""
    predictor_filters: int = 160
    predictor_kernel: int = 3
    aligner: str = "rad"
    """How durations are found while training. "rad": a learned attention (its own encoder over the mels,
    the forward-sum and binarization losses; Badlani et al., 2021). "gaussian": Glow-TTS's monotonic
    alignment search over each frame's likelihood under the token's mel prior mean (the ``mel_prior``
    projection of the encoder output), whose Gaussian loss on the aligned frames is the alignment loss: no
    separate aligner to train, and the encoder is taught each phoneme's sound from the first step."""
    aligner_dim: int = 80
    """Width of the "rad" aligner's projections."""
    decoder_type: str = "conv"
    """"fft" (Transformer blocks, as in the paper) or "conv" (ConvNeXt blocks: faster on a CPU)."""
    mel_prior: bool = True
    """Predict a per-phoneme mel linearly from the variance-adapted encoder states, upsampled
    by the durations, and let the decoder predict only the residual; the prior gets its own
    L1 loss (as Glow-TTS/Grad-TTS's encoder). The encoder is taught the phoneme's sound
    directly, so intelligible output appears in fewer steps."""
    prior_loss_weight: float = 1.0
    conv_kernel: int = 7
    conv_expansion: int = 2
    postnet_layers: int = 0
    """Optional residual conv postnet (0 = none: it costs ~30% speed for a small gain)."""
    max_frames_per_token: int = 60
    max_frames: int = 3000
    """Hard cap on generated frames per call (~35 s at 86 frames/s): bounded synthesis."""
    bin_loss_start_step: int = 300
    bin_loss_warmup_steps: int = 300
    duration_loss_weight: float = 1.0
    pitch_loss_weight: float = 0.5
    energy_loss_weight: float = 0.5
    align_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        check_ranges(self, "model_config", {
            **dict.fromkeys(("encoder_layers", "heads", "ff_dim", "ff_kernel", "predictor_filters",
                             "predictor_kernel", "aligner_dim", "conv_kernel", "conv_expansion", "max_frames_per_token",
                             "max_frames"), POSITIVE),
            "decoder_layers": POSITIVE, "postnet_layers": AT_LEAST_0,
            "hidden": (lambda v: v >= 1 and v % self.heads == 0, f"a positive multiple of heads ({self.heads})"),
            **dict.fromkeys(("dropout", "predictor_dropout"), PROBABILITY),
            "dropout_ramp_steps": (lambda v: len(v) == 2 and 0 <= v[0] <= v[1], "[start, end] steps, 0 <= start <= end"),
            "decoder_type": (lambda v: v in ("fft", "conv"), "'fft' or 'conv'"),
            "aligner": (lambda v: v == "rad" or (v == "gaussian" and self.mel_prior),
                        "'rad', or 'gaussian' (which needs mel_prior: true)"),
            **dict.fromkeys(("bin_loss_start_step", "bin_loss_warmup_steps"), AT_LEAST_0),
            **dict.fromkeys(("prior_loss_weight", "duration_loss_weight", "pitch_loss_weight", "energy_loss_weight",
                             "align_loss_weight"), WEIGHT),
        })


PRESETS: dict[str, FastSpeech2Config] = {
    "tiny": FastSpeech2Config(hidden=32, encoder_layers=1, decoder_layers=2, heads=2, ff_dim=64,
                              predictor_filters=32, aligner_dim=16, dropout=0.0, predictor_dropout=0.0),
    "cpu": FastSpeech2Config(),
    "gpu": FastSpeech2Config(hidden=256, encoder_layers=4, decoder_layers=4, ff_dim=1024, ff_kernel=9,
                             predictor_filters=256, postnet_layers=5, dropout=0.1, predictor_dropout=0.1,
                             dropout_ramp_steps=[0, 0], decoder_type="fft"),
}


@dataclass
class FastSpeech2Output:
    """Training forward output. B batch, L tokens, T frames, M mel bins."""

    mel: torch.Tensor  # (B, M, T) predicted, normalized
    log_duration: torch.Tensor  # (B, L) predicted log(1 + frames)
    pitch: torch.Tensor  # (B, L) predicted
    energy: torch.Tensor  # (B, L) predicted
    durations: torch.Tensor  # (B, L) long, from the aligner (targets)
    pitch_target: torch.Tensor  # (B, L)
    energy_target: torch.Tensor  # (B, L)
    soft_attention: torch.Tensor  # (B, T, L)
    hard_attention: torch.Tensor  # (B, T, L)
    attention_logprob: torch.Tensor  # (B, T, L)
    log_prior: torch.Tensor  # (B, T, L)
    mel_prior: torch.Tensor | None = None  # (B, M, T) when cfg.mel_prior
    align_nll: torch.Tensor | None = None  # () the Gaussian alignment loss, when cfg.aligner == "gaussian"


class FastSpeech2(nn.Module):
    def __init__(self, cfg: FastSpeech2Config, n_symbols: int, n_mels: int, n_speakers: int = 1):
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        D = cfg.hidden
        self.embedding = nn.Embedding(n_symbols, D, padding_idx=0)
        self.speaker_embedding = nn.Embedding(max(n_speakers, 1), D)
        nn.init.normal_(self.speaker_embedding.weight, std=0.02)
        self.encoder = FFTStack(D, cfg.encoder_layers, cfg.heads, cfg.ff_dim, cfg.ff_kernel, cfg.dropout)
        pd = cfg.predictor_dropout
        self.duration_predictor = VariancePredictor(D, cfg.predictor_filters, cfg.predictor_kernel, pd)
        self.pitch_predictor = VariancePredictor(D, cfg.predictor_filters, cfg.predictor_kernel, pd)
        self.energy_predictor = VariancePredictor(D, cfg.predictor_filters, cfg.predictor_kernel, pd)
        self.pitch_embedding = nn.Conv1d(1, D, 3, padding=1)
        self.energy_embedding = nn.Conv1d(1, D, 3, padding=1)
        if cfg.decoder_type == "conv":
            self.decoder = ConvStack(D, cfg.decoder_layers, cfg.conv_kernel, cfg.conv_expansion, cfg.dropout)
        else:  # "fft" (the config checks the value)
            self.decoder = FFTStack(D, cfg.decoder_layers, cfg.heads, cfg.ff_dim, cfg.ff_kernel, cfg.dropout)
        self.mel_out = nn.Linear(D, n_mels)
        self.mel_prior = nn.Linear(D, n_mels) if cfg.mel_prior else None
        self.postnet = nn.ModuleList(
            nn.Conv1d(n_mels if i == 0 else D, n_mels if i == cfg.postnet_layers - 1 else D, 5, padding=2)
            for i in range(cfg.postnet_layers))
        self.aligner = AlignmentEncoder(n_mels, D, cfg.aligner_dim) if cfg.aligner == "rad" else None

    def set_training_step(self, step: int) -> None:
        """Set every dropout rate for training step ``step`` (the ``dropout_ramp_steps`` schedule).

        A pure function of the step, so a resumed run trains exactly as an uninterrupted one."""
        start, end = self.cfg.dropout_ramp_steps
        ramp = 1.0 if end <= start else min(max((step - start) / (end - start), 0.0), 1.0)
        for name, module in self.named_modules():
            full = self.cfg.predictor_dropout if name.split(".")[0].endswith("_predictor") else self.cfg.dropout
            if isinstance(module, nn.Dropout):
                module.p = full * ramp
            elif isinstance(module, MultiHeadSelfAttention):
                module.dropout = full * ramp

    @property
    def n_speakers(self) -> int:
        return self.speaker_embedding.num_embeddings

    # ------------------------------------------------------------------ shared pieces
    def encode(self, tokens: torch.Tensor, token_lens: torch.Tensor, speakers: torch.Tensor):
        """tokens (B, L) -> (encoder output (B, L, D) with speaker added, mask (B, L), embeddings (B, L, D))."""
        mask = sequence_mask(token_lens, tokens.shape[1])
        emb = self.embedding(tokens)
        h = self.encoder(emb, mask) + self.speaker_embedding(speakers)[:, None, :]
        return h * mask.unsqueeze(-1), mask, emb

    def _variance_embed(self, h, pitch, energy):
        return (h + self.pitch_embedding(pitch[:, None, :]).transpose(1, 2)
                + self.energy_embedding(energy[:, None, :]).transpose(1, 2))

    def decode(self, h: torch.Tensor, durations: torch.Tensor, speakers: torch.Tensor,
               max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, L, D), durations (B, L) -> (mel (B, M, T), frame lengths (B,))."""
        x, lens = regulate_length(h, durations, max_frames)
        return self.decode_frames(x, sequence_mask(lens, x.shape[1]), speakers), lens

    def decode_frames(self, x: torch.Tensor, mask: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """Already length-regulated frames x (B, T, D), mask (B, T) -> mel (B, M, T), zero at padding."""
        return self._decode_frames(x, mask, speakers)[0]

    def _decode_frames(self, x, mask, speakers) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (mel (B, M, T), mel prior (B, M, T) or None)."""
        fmask = mask[:, None, :].to(x.dtype)
        prior = self.mel_prior(x).transpose(1, 2) * fmask if self.mel_prior is not None else None
        x = x + self.speaker_embedding(speakers)[:, None, :]
        y = self.decoder(x, mask)
        mel = self.mel_out(y).transpose(1, 2)
        if prior is not None:
            mel = mel + prior
        if len(self.postnet):
            r = mel
            for i, conv in enumerate(self.postnet):
                r = conv(r)
                if i < len(self.postnet) - 1:
                    r = torch.tanh(r)
            mel = mel + r
        return mel * fmask, prior

    # ------------------------------------------------------------------ training
    def forward(self, tokens, token_lens, mels, mel_lens, pitch, voiced, energy, speakers) -> FastSpeech2Output:
        """Teacher-forced pass.

        tokens (B, L) long; token_lens (B,); mels (B, M, T) normalized; mel_lens (B,);
        pitch, energy (B, T) normalized frame values; voiced (B, T) bool; speakers (B,).
        """
        h, tmask, emb = self.encode(tokens, token_lens, speakers)
        T, L = mels.shape[2], tokens.shape[1]
        frame_mask = sequence_mask(mel_lens, T)
        log_prior = beta_binomial_log_prior(token_lens, mel_lens, L, T)
        soft, logprob, hard, align_nll = self._align(h, emb, tmask, mels, token_lens, mel_lens, frame_mask, log_prior)
        durations = hard.sum(1).long()  # (B, L): frames per token; sums to mel_lens
        pitch_t = average_by_duration(pitch, voiced & frame_mask, durations)
        energy_t = average_by_duration(energy, frame_mask, durations)
        log_dur = self.duration_predictor(h, tmask)
        pitch_p = self.pitch_predictor(h, tmask)
        energy_p = self.energy_predictor(h, tmask)
        hv = self._variance_embed(h, pitch_t, energy_t)
        x, _ = regulate_length(hv, durations, T)
        mel, prior = self._decode_frames(x, frame_mask, speakers)
        return FastSpeech2Output(mel, log_dur, pitch_p, energy_p, durations, pitch_t, energy_t,
                                 soft, hard, logprob, log_prior, prior, align_nll)

    def _align(self, h, emb, tmask, mels, token_lens, mel_lens, frame_mask, log_prior):
        """-> (soft attention, attention log-probabilities, hard path: each (B, T, L); Gaussian loss or None)."""
        if self.aligner is not None:  # "rad"
            soft, logprob = self.aligner(mels, emb.transpose(1, 2), tmask, log_prior)
            return soft, logprob, hard_alignment(soft, token_lens, mel_lens), None
        means = self.mel_prior(h)  # (B, L, M): each token's mean frame
        loglik = gaussian_log_likelihood(mels, means).masked_fill(~tmask[:, None, :], -1e4)
        # the beta-binomial prior only steers the first steps, while the means are still noise: a frame's
        # log-likelihood soon spans hundreds of nats, the prior a few
        score = loglik + log_prior
        hard = monotonic_path(score, token_lens, mel_lens)
        aligned = torch.bmm(hard.to(means.dtype), means).transpose(1, 2)  # (B, M, T)
        fmask = frame_mask[:, None, :].to(mels.dtype)
        nll = 0.5 * ((mels - aligned) ** 2 * fmask).sum() / (fmask.sum() * mels.shape[1])
        soft = torch.softmax(score, dim=-1).masked_fill(~tmask[:, None, :], 0.0)
        return soft, torch.log_softmax(loglik, dim=-1), hard.to(mels.dtype), nll

    def loss(self, out: FastSpeech2Output, mels, mel_lens, token_lens, step: int) -> dict[str, torch.Tensor]:
        """All loss terms and their weighted total under key 'loss'."""
        cfg = self.cfg
        fmask = sequence_mask(mel_lens, mels.shape[2])[:, None, :].to(mels.dtype)
        n_frames = fmask.sum() * mels.shape[1]
        mel_loss = (torch.abs(out.mel - mels) * fmask).sum() / n_frames
        tmask = sequence_mask(token_lens, out.log_duration.shape[1]).to(mels.dtype)
        n_tok = tmask.sum()
        dur_target = torch.log1p(out.durations.to(mels.dtype))
        dur_loss = (((out.log_duration - dur_target) ** 2) * tmask).sum() / n_tok
        pitch_loss = (((out.pitch - out.pitch_target) ** 2) * tmask).sum() / n_tok
        energy_loss = (((out.energy - out.energy_target) ** 2) * tmask).sum() / n_tok
        if out.align_nll is not None:  # "gaussian": the means' loss on the searched path; nothing to binarize
            align_loss, ramp, b_loss = out.align_nll, 0.0, mel_loss.new_zeros(())
        else:
            align_loss = forward_sum_loss(out.attention_logprob, out.log_prior, token_lens, mel_lens)
            ramp = min(max(step - cfg.bin_loss_start_step, 0) / max(cfg.bin_loss_warmup_steps, 1), 1.0)
            b_loss = bin_loss(out.hard_attention, out.soft_attention) if ramp > 0 else mel_loss.new_zeros(())
        prior_loss = ((torch.abs(out.mel_prior - mels) * fmask).sum() / n_frames if out.mel_prior is not None
                      else mel_loss.new_zeros(()))
        total = (mel_loss + cfg.prior_loss_weight * prior_loss + cfg.duration_loss_weight * dur_loss + cfg.pitch_loss_weight * pitch_loss
                 + cfg.energy_loss_weight * energy_loss + cfg.align_loss_weight * (align_loss + ramp * b_loss))
        return {"loss": total, "mel": mel_loss, "duration": dur_loss, "pitch": pitch_loss,
                "energy": energy_loss, "align": align_loss, "bin": b_loss,
                **({"prior": prior_loss} if out.mel_prior is not None else {})}

    # ------------------------------------------------------------------ synthesis
    @torch.no_grad()
    def infer(self, tokens: torch.Tensor, speakers: torch.Tensor | None = None, speed: float = 1.0,
              pitch_shift: float = 0.0, token_lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> (mel (B, M, T) normalized, frame lengths (B,)).

        ``speed`` > 1 speaks faster; ``pitch_shift`` is added to the normalized pitch
        (in speaker standard deviations). Output length is capped at ``cfg.max_frames``.
        """
        B, L = tokens.shape
        if token_lens is None:
            token_lens = torch.full((B,), L, dtype=torch.long, device=tokens.device)
        if speakers is None:
            speakers = torch.zeros(B, dtype=torch.long, device=tokens.device)
        h, tmask, _ = self.encode(tokens, token_lens, speakers)
        log_dur = self.duration_predictor(h, tmask)
        dur = torch.clamp(torch.round((torch.exp(log_dur) - 1) / max(speed, 1e-3)), 0, self.cfg.max_frames_per_token)
        dur = (dur * tmask).long()
        # every utterance gets at least one frame, and no more than max_frames
        dur[:, 0] = torch.where(dur.sum(1) == 0, torch.ones_like(dur[:, 0]), dur[:, 0])
        over = dur.sum(1, keepdim=True) > self.cfg.max_frames
        if over.any():
            scale = self.cfg.max_frames / dur.sum(1, keepdim=True).clamp(min=1)
            dur = torch.where(over, torch.floor(dur * scale).long(), dur)
        pitch = (self.pitch_predictor(h, tmask) + pitch_shift) * tmask
        energy = self.energy_predictor(h, tmask)
        hv = self._variance_embed(h, pitch, energy)
        return self.decode(hv, dur, speakers)

    @torch.no_grad()
    def align(self, tokens, token_lens, mels, mel_lens, speakers) -> torch.Tensor:
        """Hard durations (B, L) in frames from the aligner; each row sums to its mel length."""
        h, tmask, emb = self.encode(tokens, token_lens, speakers)
        log_prior = beta_binomial_log_prior(token_lens, mel_lens, tokens.shape[1], mels.shape[2])
        hard = self._align(h, emb, tmask, mels, token_lens, mel_lens, sequence_mask(mel_lens, mels.shape[2]),
                           log_prior)[2]
        return hard.sum(1).long()

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named module groups for freezing during fine-tuning."""
        return {
            "embedding": ["embedding"],
            "encoder": ["embedding", "encoder"],
            "speaker_embedding": ["speaker_embedding"],
            "variance_adaptor": ["duration_predictor", "pitch_predictor", "energy_predictor",
                                 "pitch_embedding", "energy_embedding"],
            "decoder": ["decoder", "mel_out", "postnet"],
            "aligner": ["aligner"],
        }
