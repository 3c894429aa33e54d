"""The Lightning seam: steps, logging, optimizer and schedule. No model maths here."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import lightning as L
import torch

from voicetrain._version import __version__
from voicetrain.config import SCHEMA_VERSION, to_dict
from voicetrain.data.cache import FeatureStats
from voicetrain.data.dataset import Batch
from voicetrain.text.symbols import SymbolTable
from voicetrain.run_config import RunConfig
from voicetrain.training.loop import ResumableModule


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term is NaN/Inf; names the batch and suggests a fix."""


def lr_factor(step: int, optim) -> float:
    """Multiplier of the peak learning rate at ``step`` (warm-up, then decay)."""
    warm = max(optim.warmup_steps, 1)
    if step < warm:
        return (step + 1) / warm
    if optim.decay == "noam":
        return math.sqrt(warm / (step + 1))
    if optim.decay == "cosine":
        return 1.0  # cosine needs max_steps; handled in TTSLightningModule
    return 1.0


class TTSLightningModule(ResumableModule, L.LightningModule):
    def __init__(self, model: torch.nn.Module, run_cfg: RunConfig, symbols: SymbolTable, stats: FeatureStats):
        super().__init__()
        self.model = model
        self.run_cfg = run_cfg
        self.symbols = symbols
        self.stats = stats
        """(epoch, batches done in it) read from a checkpoint; the data module skips those batches."""
        self.last_val: dict[str, float] = {}
        self.last_val_batch: tuple[Batch, Any] | None = None
        self.trainable_speaker_rows: list[int] | None = None
        """Fine-tuning 'speaker-embedding': only these speaker-table rows may change."""

    # ----------------------------------------------------------------- steps
    def forward_losses(self, batch: Batch):
        b = batch
        out = self.model(b.tokens, b.token_lens, b.mels, b.mel_lens, b.pitch, b.voiced, b.energy, b.speakers)
        losses = self.model.loss(out, b.mels, b.mel_lens, b.token_lens, step=int(self.global_step))
        return out, losses

    def on_train_batch_start(self, batch, batch_idx) -> None:
        set_step = getattr(self.model, "set_training_step", None)  # step-scheduled dropout
        if set_step is not None:
            set_step(int(self.global_step))
        # frozen modules run as at synthesis (no dropout): the trainable part learns
        # against the network it will be used with; Lightning resets train() each epoch
        for name in self.run_cfg.finetune.frozen if self.run_cfg.finetune else ():
            getattr(self.model, name).eval()

    def training_step(self, batch: Batch, batch_idx: int):
        _, losses = self.forward_losses(batch)
        bad = [k for k, v in losses.items() if not torch.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss term(s) {bad} at step {self.global_step} on batch {batch.ids[:8]}"
                f"{'...' if len(batch.ids) > 8 else ''}; lower the learning rate (e.g. --lr "
                f"{self.run_cfg.optim.lr / 3:.1e}), keep gradient clipping on, and run `voicetrain check` on the dataset"
            )
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=len(batch),
                      prog_bar=False, on_step=True, on_epoch=False)
        self.log("train_loss", losses["loss"].detach(), prog_bar=True, batch_size=len(batch), logger=False)
        return losses["loss"]

    def validation_step(self, batch: Batch, batch_idx: int):
        out, losses = self.forward_losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch), on_epoch=True,
                      prog_bar=False, sync_dist=True)
        if batch_idx == 0:
            self.last_val_batch = (batch, out)

    def on_validation_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        self.last_val = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.global_step % max(self.run_cfg.train.log_every_steps, 1) == 0:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self._mask_frozen_speaker_rows()

    def _mask_frozen_speaker_rows(self) -> None:
        """Fine-tuning 'speaker-embedding' strategy: only new speakers' rows may change."""
        rows = self.trainable_speaker_rows
        emb = getattr(self.model, "speaker_embedding", None)
        if rows is None or emb is None or emb.weight.grad is None:
            return
        keep = torch.zeros_like(emb.weight.grad[:, :1])
        keep[rows] = 1.0
        emb.weight.grad.mul_(keep)

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        o = self.run_cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        # weight decay would move frozen speaker rows even with zero gradient: none on embeddings
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if ("embedding" in name or p.ndim < 2) else decay).append(p)
        # Lightning's mixed-precision plugin refuses gradient clipping with a fused optimizer (it would unscale
        # internally); the optimizer step is ~1% of a step here, so mixed precision takes the plain AdamW
        fused = (self.run_cfg.train.precision in ("32-true", "32", "64-true")
                 and all(p.device.type in ("cpu", "cuda") for p in params))
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=o.lr, betas=tuple(o.betas), fused=fused)
        max_steps = max(self.run_cfg.train.max_steps, 1)

        def factor(step: int) -> float:
            if o.decay == "cosine" and step >= o.warmup_steps:
                progress = min((step - o.warmup_steps) / max(max_steps - o.warmup_steps, 1), 1.0)
                return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
            return lr_factor(step, o)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- checkpoints
    def voicetrain_payload(self) -> dict[str, Any]:
        """Everything a checkpoint needs to load on its own (plain types only: weights_only-safe)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "version": __version__,
            "run_config": to_dict(self.run_cfg),
            "symbols": list(self.symbols.symbols),
            "stats": asdict(self.stats),
        }
