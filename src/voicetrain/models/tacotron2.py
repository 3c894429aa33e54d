"""Tacotron 2 (Shen et al., 2018) with a reduction factor and guided attention, sized for a CPU by default.

Phoneme embedding -> 3 conv layers + BiLSTM encoder -> location-sensitive attention
(Chorowski et al., 2015) -> autoregressive LSTM decoder that emits ``r`` frames and
``r`` stop logits per step -> residual conv postnet. The guided attention loss
(Tachibana et al., 2017) penalizes attention far from the diagonal, so alignment
forms in a few hundred steps instead of thousands — which is what makes an
attention model trainable at all on a 2-core CPU budget.

Unlike FastSpeech 2 there is no duration model: length comes from the stop token,
so synthesis is bounded explicitly (``max_frames_per_token`` * L + ``extra_frames``,
capped at ``max_frames``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from voicetrain.config import AT_LEAST_0, POSITIVE, PROBABILITY, WEIGHT, check_ranges, finite
from voicetrain.models.aligner import hard_alignment
from voicetrain.models.layers import sequence_mask


@dataclass(frozen=True)
class Tacotron2Config:
    """Hyperparameters. The default is the CPU preset; see :data:`PRESETS` for others."""

    embedding_dim: int = 256
    """Phoneme embedding size (input of the encoder convolutions)."""
    encoder_dim: int = 256
    """Encoder output channels (BiLSTM: half per direction); also the speaker embedding size."""
    encoder_convs: int = 3
    encoder_kernel: int = 5
    encoder_dropout: float = 0.5
    attention_dim: int = 128
    attention_location_filters: int = 32
    attention_location_kernel: int = 31
    prenet_dims: tuple[int, ...] = (256, 256)
    prenet_dropout: float = 0.5
    """Kept ON at synthesis too (as in the paper): the only source of variation, and without it
    the decoder leans on the previous frame and repeats itself."""
    attention_rnn_dim: int = 256
    """The paper's 1024/1024 LSTMs are ~70% of a CPU step: 256/384 trains ~2.5x faster."""
    decoder_rnn_dim: int = 384
    rnn_dropout: float = 0.1
    """Dropout on both decoder LSTM states (NVIDIA's cheaper stand-in for the paper's zoneout)."""
    reduction_factor: int = 3
    """Frames emitted per decoder step: fewer steps = faster and easier to align; 2-3 suits a CPU."""
    postnet_layers: int = 5
    postnet_dim: int = 128
    """128 channels instead of the paper's 512: the postnet's convs dominate the rest of a CPU step."""
    postnet_kernel: int = 5
    postnet_dropout: float = 0.5
    stop_threshold: float = 0.5
    stop_pos_weight: float = 5.0
    """Up-weights the rare 'stop' frames in the stop-token BCE."""
    guided_attention_sigma: float = 0.2
    """Width g of the diagonal band in the guided attention loss (Tachibana et al. use 0.2)."""
    guided_attention_weight: float = 1.0
    stop_loss_weight: float = 1.0
    max_frames_per_token: int = 12
    min_frames_per_token: float = 2.0
    """The stop token is not heeded before ``min_frames_per_token * L`` frames: an untrained or unsure stop
    token otherwise ends a sentence after a frame or two (real speech runs ~6 frames per phoneme)."""
    extra_frames: int = 20
    """Synthesis stops after ``max_frames_per_token * L + extra_frames`` frames if the stop token never fires."""
    max_frames: int = 3000
    """Hard cap on generated frames per call (~35 s at 86 frames/s): bounded synthesis."""

    def __post_init__(self) -> None:
        check_ranges(self, "model_config", {
            **dict.fromkeys(("embedding_dim", "encoder_dim", "encoder_kernel", "attention_dim",
                             "attention_location_filters", "attention_location_kernel", "attention_rnn_dim",
                             "decoder_rnn_dim", "reduction_factor", "postnet_dim", "postnet_kernel",
                             "max_frames_per_token", "max_frames"), POSITIVE),
            **dict.fromkeys(("encoder_convs", "postnet_layers", "extra_frames"), AT_LEAST_0),
            "prenet_dims": (lambda v: all(d >= 1 for d in v), "positive sizes"),
            **dict.fromkeys(("encoder_dropout", "prenet_dropout", "rnn_dropout", "postnet_dropout", "stop_threshold"),
                            PROBABILITY),
            "guided_attention_sigma": (lambda v: finite(v) and v > 0, "a number > 0"),
            **dict.fromkeys(("stop_pos_weight", "guided_attention_weight", "stop_loss_weight", "min_frames_per_token"),
                            WEIGHT),
        })


PRESETS: dict[str, Tacotron2Config] = {
    "tiny": Tacotron2Config(embedding_dim=32, encoder_dim=32, encoder_convs=1, encoder_dropout=0.0,
                            attention_dim=16, attention_location_filters=4, attention_location_kernel=7,
                            prenet_dims=(32,), prenet_dropout=0.1, attention_rnn_dim=48, decoder_rnn_dim=48,
                            rnn_dropout=0.0, reduction_factor=3, postnet_layers=2, postnet_dim=32,
                            postnet_dropout=0.0),
    "cpu": Tacotron2Config(),
    # the paper's sizes (Shen et al., 2018), with r=2 and dropout instead of zoneout
    "gpu": Tacotron2Config(embedding_dim=512, encoder_dim=512, attention_dim=128, prenet_dims=(256, 256),
                           attention_rnn_dim=1024, decoder_rnn_dim=1024, reduction_factor=2, postnet_dim=512),
}


@dataclass
class Tacotron2Output:
    """Training forward output. B batch, L tokens, T frames, M mel bins, S = ceil(T / r) decoder steps."""

    mel: torch.Tensor  # (B, M, T) after the postnet, normalized
    mel_before: torch.Tensor  # (B, M, T) before the postnet
    stop_logits: torch.Tensor  # (B, S * r) one logit per frame, padded frames included
    soft_attention: torch.Tensor  # (B, T, L) attention of the step that produced each frame
    step_attention: torch.Tensor  # (B, S, L) attention per decoder step (what the guided loss sees)


def guided_attention_weights(text_lens: torch.Tensor, step_lens: torch.Tensor, S: int, L: int,
                             sigma: float) -> torch.Tensor:
    """(B, S, L) penalty 1 - exp(-(l/L_b - s/S_b)^2 / (2 sigma^2)), 0 outside each item's valid area.

    Tachibana et al. (2017): near-zero on the diagonal, near one far from it.
    """
    dev = text_lens.device
    s = torch.arange(S, device=dev, dtype=torch.float32)[None, :, None] / step_lens.clamp(min=1)[:, None, None]
    n = torch.arange(L, device=dev, dtype=torch.float32)[None, None, :] / text_lens.clamp(min=1)[:, None, None]
    w = 1.0 - torch.exp(-((n - s) ** 2) / (2 * sigma ** 2))
    valid = sequence_mask(step_lens, S)[:, :, None] & sequence_mask(text_lens, L)[:, None, :]
    return w * valid.to(w.dtype)


def guided_attention_loss(attention: torch.Tensor, text_lens: torch.Tensor, step_lens: torch.Tensor,
                          sigma: float) -> torch.Tensor:
    """attention (B, S, L) -> scalar: mean over valid steps of the attention mass off the diagonal.

    Summed over tokens (each row is a distribution) and averaged over steps, so the value
    is in [0, 1] whatever the text length (a per-cell mean would shrink with L).
    """
    B, S, L = attention.shape
    w = guided_attention_weights(text_lens, step_lens, S, L, sigma)
    return (attention * w).sum() / step_lens.sum().clamp(min=1)


class LocationSensitiveAttention(nn.Module):
    """Additive attention whose energies also see the previous and cumulative attention weights.

    The location features are what keep the alignment moving forward monotonically.
    """

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int, filters: int, kernel: int):
        super().__init__()
        self.query_layer = nn.Linear(query_dim, attention_dim, bias=False)
        self.memory_layer = nn.Linear(memory_dim, attention_dim, bias=False)
        self.location_conv = nn.Conv1d(2, filters, kernel, padding=kernel // 2, bias=False)
        self.location_dense = nn.Linear(filters, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=True)

    def prepare(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, L, D) -> (processed memory (B, L, A), location matrix (2 * kernel, A)).

        Both are computed once per utterance, not per decoder step. The location conv and its
        dense layer have no nonlinearity between them, so they compose into one (2k, A) matrix
        applied to unfolded windows: one matmul per step instead of a conv + linear (conv
        backward on tiny inputs is the most expensive op of a CPU training step).
        """
        conv_w = self.location_conv.weight  # (F, 2, k)
        loc_w = conv_w.reshape(conv_w.shape[0], -1).t() @ self.location_dense.weight.t()  # (2k, A)
        return self.memory_layer(memory), loc_w

    def forward(self, query: torch.Tensor, memory: torch.Tensor, prepared: tuple[torch.Tensor, torch.Tensor],
                weights: torch.Tensor, cumulative: torch.Tensor, mask: torch.Tensor):
        """query (B, Q), memory (B, L, D), prepared from :meth:`prepare`, weights/cumulative (B, L), mask (B, L).

        Returns (context (B, D), new weights (B, L)).
        """
        processed, loc_w = prepared
        B, L = weights.shape
        k = self.location_conv.kernel_size[0]
        # same windows (and zero padding) as location_conv(stack(weights, cumulative)) would see
        win = F.pad(torch.stack([weights, cumulative], dim=1), (k // 2, k - 1 - k // 2)).unfold(2, k, 1)
        loc = win.transpose(1, 2).reshape(B, L, 2 * k) @ loc_w  # (B, L, A)
        energies = self.v(torch.tanh(self.query_layer(query)[:, None, :] + loc + processed)).squeeze(-1)
        energies = energies.masked_fill(~mask, -1e4)
        w = F.softmax(energies, dim=-1)
        context = torch.bmm(w[:, None, :], memory).squeeze(1)
        return context, w


class Encoder(nn.Module):
    """Conv stack (local context, like n-gram features) followed by a BiLSTM (long-range context)."""

    def __init__(self, cfg: Tacotron2Config):
        super().__init__()
        k = cfg.encoder_kernel
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv1d(cfg.embedding_dim if i == 0 else cfg.encoder_dim, cfg.encoder_dim, k,
                                    padding=k // 2), nn.BatchNorm1d(cfg.encoder_dim))
            for i in range(cfg.encoder_convs))
        self.dropout = cfg.encoder_dropout
        self.lstm = nn.LSTM(cfg.encoder_dim if cfg.encoder_convs else cfg.embedding_dim, cfg.encoder_dim // 2,
                            batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, E) embeddings, lens (B,), mask (B, L) -> (B, L, D), zero at padding."""
        m = mask[:, None, :].to(x.dtype)
        y = x.transpose(1, 2)
        for conv in self.convs:
            # re-mask after each conv so padding never leaks into the next layer's receptive field
            y = F.dropout(F.relu(conv(y * m)), self.dropout, self.training)
        # packing keeps the backward direction from starting in the padding
        packed = pack_padded_sequence(y.transpose(1, 2), lens.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * mask[:, :, None].to(out.dtype)


class Prenet(nn.Module):
    def __init__(self, in_dim: int, dims: tuple[int, ...], dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip((in_dim,) + tuple(dims[:-1]), dims))
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., M) -> (..., dims[-1]). Dropout is applied in eval mode too (training=True on purpose)."""
        for layer in self.layers:
            x = F.dropout(F.relu(layer(x)), self.dropout, training=True)
        return x


class Postnet(nn.Module):
    """Residual conv stack that refines the whole decoder output with both past and future context."""

    def __init__(self, n_mels: int, cfg: Tacotron2Config):
        super().__init__()
        n, d, k = cfg.postnet_layers, cfg.postnet_dim, cfg.postnet_kernel
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv1d(n_mels if i == 0 else d, n_mels if i == n - 1 else d, k, padding=k // 2),
                          nn.BatchNorm1d(n_mels if i == n - 1 else d))
            for i in range(n))
        self.dropout = cfg.postnet_dropout

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, M, T) -> residual (B, M, T)."""
        y = mel
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if i < len(self.convs) - 1:
                y = torch.tanh(y)
            y = F.dropout(y, self.dropout, self.training)
        return y


class Tacotron2(nn.Module):
    alignment_advice = (
        " Tacotron 2 learns alignment through its attention: if it has not locked onto the diagonal, start a "
        "new run with a stronger guided attention or a larger reduction factor (in a --config YAML: "
        "model_config: {guided_attention_weight: 2.0, reduction_factor: 4}); samples that stop early or "
        "babble to the length cap are the same failure.")
    """Appended to the training health check's alignment warning."""

    def __init__(self, cfg: Tacotron2Config, n_symbols: int, n_mels: int, n_speakers: int = 1):
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        r = cfg.reduction_factor
        D = cfg.encoder_dim
        self.embedding = nn.Embedding(n_symbols, cfg.embedding_dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=math.sqrt(2.0 / (n_symbols + cfg.embedding_dim)))
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.encoder = Encoder(cfg)
        # added to every encoder output: the attention and the decoder both see who is speaking
        self.speaker_embedding = nn.Embedding(max(n_speakers, 1), D)
        nn.init.normal_(self.speaker_embedding.weight, std=0.02)
        self.prenet = Prenet(n_mels, cfg.prenet_dims, cfg.prenet_dropout)
        P = cfg.prenet_dims[-1] if cfg.prenet_dims else n_mels
        self.attention_rnn = nn.LSTMCell(P + D, cfg.attention_rnn_dim)
        self.attention = LocationSensitiveAttention(cfg.attention_rnn_dim, D, cfg.attention_dim,
                                                    cfg.attention_location_filters, cfg.attention_location_kernel)
        self.decoder_rnn = nn.LSTMCell(cfg.attention_rnn_dim + D, cfg.decoder_rnn_dim)
        self.mel_proj = nn.Linear(cfg.decoder_rnn_dim + D, n_mels * r)
        self.stop_proj = nn.Linear(cfg.decoder_rnn_dim + D, r)
        self.postnet = Postnet(n_mels, cfg) if cfg.postnet_layers else None

    @property
    def n_speakers(self) -> int:
        return self.speaker_embedding.num_embeddings

    # ------------------------------------------------------------------ shared pieces
    def encode(self, tokens: torch.Tensor, token_lens: torch.Tensor, speakers: torch.Tensor):
        """tokens (B, L) -> (memory (B, L, D) with speaker added, mask (B, L))."""
        mask = sequence_mask(token_lens, tokens.shape[1])
        h = self.encoder(self.embedding(tokens), token_lens, mask)
        h = h + self.speaker_embedding(speakers)[:, None, :]
        return h * mask[:, :, None].to(h.dtype), mask

    def _initial_state(self, memory: torch.Tensor):
        B, L, D = memory.shape
        z = memory.new_zeros
        return dict(ah=z(B, self.cfg.attention_rnn_dim), ac=z(B, self.cfg.attention_rnn_dim),
                    dh=z(B, self.cfg.decoder_rnn_dim), dc=z(B, self.cfg.decoder_rnn_dim),
                    ctx=z(B, D), w=z(B, L), cum=z(B, L))

    def _step(self, x: torch.Tensor, st: dict, memory, prepared, mask) -> torch.Tensor:
        """One decoder step. x (B, P) prenet output of the previous frame; updates ``st`` in place.

        Returns the projection input (B, decoder_rnn_dim + D).
        """
        p = self.cfg.rnn_dropout
        st["ah"], st["ac"] = self.attention_rnn(torch.cat([x, st["ctx"]], -1), (st["ah"], st["ac"]))
        if p and self.training:  # skipping p=0 dropout saves two autograd nodes per step
            st["ah"] = F.dropout(st["ah"], p, True)
        st["ctx"], st["w"] = self.attention(st["ah"], memory, prepared, st["w"], st["cum"], mask)
        st["cum"] = st["cum"] + st["w"]
        st["dh"], st["dc"] = self.decoder_rnn(torch.cat([st["ah"], st["ctx"]], -1), (st["dh"], st["dc"]))
        if p and self.training:
            st["dh"] = F.dropout(st["dh"], p, True)
        return torch.cat([st["dh"], st["ctx"]], -1)

    def _postnet(self, mel: torch.Tensor) -> torch.Tensor:
        return mel + self.postnet(mel) if self.postnet is not None else mel

    # ------------------------------------------------------------------ training
    def forward(self, tokens, token_lens, mels, mel_lens, pitch=None, voiced=None, energy=None,
                speakers=None) -> Tacotron2Output:
        """Teacher-forced pass.

        tokens (B, L) long; token_lens (B,); mels (B, M, T) normalized; mel_lens (B,); speakers (B,).
        pitch, voiced, energy are accepted for the shared training interface and unused.
        T need not be a multiple of r: the targets are zero-padded to S * r frames internally.
        """
        B, M, T = mels.shape
        r = self.cfg.reduction_factor
        if speakers is None:
            speakers = torch.zeros(B, dtype=torch.long, device=tokens.device)
        memory, mask = self.encode(tokens, token_lens, speakers)
        prepared = self.attention.prepare(memory)
        S = -(-T // r)
        padded = F.pad(mels, (0, S * r - T))  # (B, M, S*r)
        # decoder input at step s is the last frame of group s-1 (a zero "go" frame at s=0)
        prev = padded[:, :, r - 1::r].transpose(1, 2)[:, :-1]  # (B, S-1, M)
        prev = torch.cat([mels.new_zeros(B, 1, M), prev], dim=1)  # (B, S, M)
        x = self.prenet(prev)  # all steps at once: the prenet does not depend on the recurrence
        st = self._initial_state(memory)
        outs, atts = [], []
        for s in range(S):
            outs.append(self._step(x[:, s], st, memory, prepared, mask))
            atts.append(st["w"])
        h = torch.stack(outs, 1)  # (B, S, H)
        step_att = torch.stack(atts, 1)  # (B, S, L)
        before = self.mel_proj(h).view(B, S, r, M).reshape(B, S * r, M).transpose(1, 2)[:, :, :T]
        after = self._postnet(before)
        stop = self.stop_proj(h).reshape(B, S * r)
        soft = step_att.repeat_interleave(r, dim=1)[:, :T]
        return Tacotron2Output(after, before, stop, soft, step_att)

    def loss(self, out: Tacotron2Output, mels, mel_lens, token_lens, step: int) -> dict[str, torch.Tensor]:
        """All loss terms and their weighted total under key 'loss'.

        'mel' is the L1 of the postnet output (the same measure FastSpeech 2 reports, so runs
        compare), 'mel_before' the L1 before the postnet; 'stop' the stop-token BCE;
        'guided_attention' the diagonal prior. ``step`` is unused (no schedules).
        """
        cfg = self.cfg
        r = cfg.reduction_factor
        fmask = sequence_mask(mel_lens, mels.shape[2])[:, None, :].to(mels.dtype)
        n = fmask.sum() * mels.shape[1]
        mel_after = (torch.abs(out.mel - mels) * fmask).sum() / n
        mel_before = (torch.abs(out.mel_before - mels) * fmask).sum() / n
        # stop target: 1 from each item's last frame on, through the batch padding (as in NVIDIA's
        # Tacotron 2): shorter items then teach "keep stopping after the end" too
        frames = torch.arange(out.stop_logits.shape[1], device=mels.device)[None, :]
        target = (frames >= (mel_lens[:, None] - 1)).to(mels.dtype)
        stop = F.binary_cross_entropy_with_logits(
            out.stop_logits, target, pos_weight=torch.tensor(cfg.stop_pos_weight, device=mels.device))
        step_lens = torch.div(mel_lens + r - 1, r, rounding_mode="floor")
        ga = guided_attention_loss(out.step_attention, token_lens, step_lens, cfg.guided_attention_sigma)
        total = mel_after + mel_before + cfg.stop_loss_weight * stop + cfg.guided_attention_weight * ga
        return {"loss": total, "mel": mel_after, "mel_before": mel_before, "stop": stop, "guided_attention": ga}

    # ------------------------------------------------------------------ synthesis
    def max_frames_for(self, token_lens: torch.Tensor) -> torch.Tensor:
        """(B,) token counts -> (B,) frame budget: proportional to the text, capped at cfg.max_frames."""
        cfg = self.cfg
        return (token_lens * cfg.max_frames_per_token + cfg.extra_frames).clamp(min=1, max=cfg.max_frames)

    @torch.no_grad()
    def infer(self, tokens: torch.Tensor, speakers: torch.Tensor | None = None, speed: float = 1.0,
              pitch_shift: float = 0.0, token_lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> (mel (B, M, T) normalized, frame lengths (B,)).

        Decodes until the stop token fires (probability > ``cfg.stop_threshold``) or the
        item's frame budget (:meth:`max_frames_for`) is spent, so it always terminates.
        ``speed`` > 1 speaks faster: the finished mel is resampled in time (Tacotron 2 has no
        duration model to scale). ``pitch_shift`` is accepted for interface compatibility and
        ignored: this model has no explicit pitch. Prenet dropout stays on (see the config).
        """
        cfg = self.cfg
        r = cfg.reduction_factor
        if tokens.shape[1] == 0:  # nothing to say: one padding token keeps every shape valid
            tokens = tokens.new_zeros(tokens.shape[0], 1)
            token_lens = None
        B, L = tokens.shape
        dev = tokens.device
        if token_lens is None:
            token_lens = torch.full((B,), L, dtype=torch.long, device=dev)
        token_lens = token_lens.clamp(min=1)
        if speakers is None:
            speakers = torch.zeros(B, dtype=torch.long, device=dev)
        memory, mask = self.encode(tokens, token_lens, speakers)
        prepared = self.attention.prepare(memory)
        budget = self.max_frames_for(token_lens)  # (B,)
        max_steps = int(-(-int(budget.max()) // r))
        lens = budget.clone()
        min_len = torch.minimum((token_lens.float() * cfg.min_frames_per_token).ceil().long(), budget)  # (B,)
        offsets = torch.arange(r, device=dev)[None, :]
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        st = self._initial_state(memory)
        frame = memory.new_zeros(B, self.n_mels)
        frames = []
        for s in range(max_steps):
            h = self._step(self.prenet(frame), st, memory, prepared, mask)
            out = self.mel_proj(h).view(B, r, self.n_mels)
            frames.append(out)
            frame = out[:, -1]
            fired = torch.sigmoid(self.stop_proj(h)) > cfg.stop_threshold  # (B, r)
            fired = fired & (s * r + offsets + 1 >= min_len[:, None])  # too early to stop: keep speaking
            first = torch.where(fired.any(1), fired.float().argmax(1), torch.full_like(lens, r))
            newly = ~done & fired.any(1)
            lens = torch.where(newly, torch.minimum(s * r + first + 1, budget), lens)
            done = done | newly | ((s + 1) * r >= budget)
            if bool(done.all()):
                break
        before = torch.cat(frames, 1).transpose(1, 2)  # (B, M, steps * r)
        T = int(lens.max())
        mel = self._postnet(before[:, :, :T])
        if speed != 1.0:
            mel, lens = self._change_speed(mel, lens, speed)
        return mel * sequence_mask(lens, mel.shape[2])[:, None, :].to(mel.dtype), lens

    def _change_speed(self, mel: torch.Tensor, lens: torch.Tensor, speed: float):
        """Linear resampling along time, per item; the result stays within cfg.max_frames."""
        new_lens = (lens.float() / max(speed, 1e-3)).round().long().clamp(min=1, max=self.cfg.max_frames)
        out = mel.new_zeros(mel.shape[0], mel.shape[1], int(new_lens.max()))
        for b in range(mel.shape[0]):
            n, m = int(lens[b]), int(new_lens[b])
            out[b, :, :m] = F.interpolate(mel[b:b + 1, :, :n], size=m, mode="linear", align_corners=True)[0]
        return out, new_lens

    @torch.no_grad()
    def align(self, tokens, token_lens, mels, mel_lens, speakers) -> torch.Tensor:
        """Hard durations (B, L) in frames from the teacher-forced attention; each row sums to its mel length.

        The best monotonic path through the attention (the same search FastSpeech 2's aligner
        uses) rather than a per-frame argmax: argmax can jump back and forth, which would give
        out-of-order phone intervals in a TextGrid.
        """
        out = self.forward(tokens, token_lens, mels, mel_lens, speakers=speakers)
        soft = out.soft_attention * sequence_mask(mel_lens, mels.shape[2])[:, :, None].to(mels.dtype)
        return hard_alignment(soft, token_lens, mel_lens).sum(1).long()

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named module groups for freezing during fine-tuning."""
        return {
            "embedding": ["embedding"],
            "encoder": ["embedding", "encoder"],
            "speaker_embedding": ["speaker_embedding"],
            "attention": ["attention"],
            "decoder": ["prenet", "attention_rnn", "attention", "decoder_rnn", "mel_proj", "stop_proj"],
            "postnet": ["postnet"],
        }
