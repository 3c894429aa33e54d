"""The Lightning seam of vocoder training: the GAN step (manual optimization), logging, optimizers, checkpoints.

One step, after ``loss.gan_start_step``:

1. the generator vocodes the mel segments;
2. discriminator update: hinge loss on real vs generated (detached) audio, both
   discriminators in one pass over the concatenated batch;
3. generator update: log-mel L1 + multi-resolution STFT + hinge adversarial +
   feature matching, with the discriminators' parameters frozen for the pass
   (``toggle_optimizer``), so no discriminator weight gradients are computed.

Before ``gan_start_step`` only the reconstruction losses train the generator.

``trainer.global_step`` counts *generator* updates: Lightning counts every
``LightningOptimizer.step`` call in manual optimization, so the discriminator's
optimizer is stepped through the wrapped torch optimizer. That skips Lightning's
precision plugin for it, which is why 16-mixed (which needs a grad scaler) is
refused for vocoder training; 32-true and bf16-mixed need none.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from voicetrain._version import __version__
from voicetrain.audio.features import MelSpectrogram
from voicetrain.config import SCHEMA_VERSION, to_dict
from voicetrain.data.vocoder_dataset import VocoderBatch
from voicetrain.vocoder_config import VocoderRunConfig
from voicetrain.vocoders import losses
from voicetrain.vocoders.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from voicetrain.training.loop import ResumableModule


class NonFiniteVocoderLossError(RuntimeError):
    """A vocoder loss term is NaN/Inf; names the step and suggests a fix."""


class VocoderLightningModule(ResumableModule, L.LightningModule):
    def __init__(self, generator: torch.nn.Module, mpd: MultiPeriodDiscriminator, mrd: MultiResolutionDiscriminator,
                 cfg: VocoderRunConfig, model_config: dict[str, Any]):
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.mpd = mpd
        self.mrd = mrd
        self.cfg = cfg
        self.model_config = dict(model_config)
        """The generator's full config (preset + overrides resolved): what synthesis rebuilds it from."""
        self.mel = MelSpectrogram(cfg.audio)  # filterbank and window as non-persistent buffers
        self.val_audio: list[tuple[str, torch.Tensor]] = []
        """(id, generated wav) of the last validation, for the sample writer."""

    # ----------------------------------------------------------------- losses
    def reconstruction_losses(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        lc = self.cfg.loss
        out = {"mel": losses.mel_l1(self.mel(fake), self.mel(real))}
        if lc.stft_weight:
            out["stft"] = losses.multi_resolution_stft_loss(fake, real, lc.stft_resolutions)
        return out

    def discriminator_step_loss(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, Any]:
        """Hinge losses of both discriminators on real and (detached) generated audio, in one pass.

        Also returns the discriminators' activations on the real audio, detached, under "real_features":
        the generator's feature-matching targets. They are one discriminator update old by then; reusing
        them saves a discriminator pass per step (~15% of a CPU step).
        """
        B = real.shape[0]
        both = torch.cat([real, fake.detach()], dim=0)
        mp, mp_feats = self.mpd(both)
        mr, mr_feats = self.mrd(both)
        d_mp = losses.discriminator_loss([x[:B] for x in mp], [x[B:] for x in mp])
        d_mr = losses.discriminator_loss([x[:B] for x in mr], [x[B:] for x in mr])
        real_feats = tuple([[f[:B].detach() for f in fs] for fs in feats] for feats in (mp_feats, mr_feats))
        return {"d_loss": d_mp + self.cfg.loss.mrd_weight * d_mr, "d_mpd": d_mp, "d_mrd": d_mr,
                "real_features": real_feats}

    def generator_adversarial_losses(self, fake: torch.Tensor, real_features) -> dict[str, torch.Tensor]:
        """Adversarial and feature-matching terms; ``real_features`` from :meth:`discriminator_step_loss`."""
        real_mp, real_mr = real_features
        fake_mp_logits, fake_mp = self.mpd(fake)
        fake_mr_logits, fake_mr = self.mrd(fake)
        return {"adv_mpd": losses.generator_adversarial_loss(fake_mp_logits),
                "adv_mrd": losses.generator_adversarial_loss(fake_mr_logits),
                "fm_mpd": losses.feature_matching_loss(real_mp, fake_mp),
                "fm_mrd": losses.feature_matching_loss(real_mr, fake_mr)}

    def generator_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        lc = self.cfg.loss
        total = lc.mel_weight * terms["mel"]
        if "stft" in terms:
            total = total + lc.stft_weight * terms["stft"]
        if "adv_mpd" in terms:
            total = (total + lc.adversarial_weight * (terms["adv_mpd"] + lc.mrd_weight * terms["adv_mrd"])
                     + lc.feature_matching_weight * (terms["fm_mpd"] + lc.mrd_weight * terms["fm_mrd"]))
        return total

    # ----------------------------------------------------------------- steps
    @property
    def gan_active(self) -> bool:
        return int(self.global_step) >= self.cfg.loss.gan_start_step

    def training_step(self, batch: VocoderBatch, batch_idx: int):
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        clip = self.cfg.optim.grad_clip or None
        real = batch.audio
        fake = self.generator(batch.mels)
        logs: dict[str, torch.Tensor] = {}
        gan = self.gan_active
        if gan:
            d_terms = self.discriminator_step_loss(real, fake)
            real_features = d_terms.pop("real_features")
            self._check_finite(d_terms)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_terms["d_loss"])  # ``fake`` was detached: no generator gradients here
            if clip:  # plain torch clipping: Lightning's refuses fused optimizers under bf16 autocast
                torch.nn.utils.clip_grad_norm_(self._d_params(), clip)
            opt_d.optimizer.step()  # not opt_d.step(): keeps global_step = generator updates (module docstring)
            logs.update(d_terms)
        terms = self.reconstruction_losses(fake, real)
        self.toggle_optimizer(opt_g)  # discriminators frozen: no weight gradients for them in this pass
        if gan:
            terms.update(self.generator_adversarial_losses(fake, real_features))
        g_loss = self.generator_total(terms)
        terms["loss"] = g_loss
        self._check_finite(terms)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if clip:
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), clip)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        sched_g.step()
        if gan:
            sched_d.step()
        logs.update(terms)
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, batch_size=len(batch),
                      on_step=True, on_epoch=False)
        self.log("mel", terms["mel"].detach(), prog_bar=True, batch_size=len(batch), logger=False)
        if gan:
            self.log("d", logs["d_loss"].detach(), prog_bar=True, batch_size=len(batch), logger=False)

    def _d_params(self) -> list[torch.nn.Parameter]:
        return list(self.mpd.parameters()) + list(self.mrd.parameters())

    def _check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        bad = [k for k, v in terms.items() if not torch.isfinite(v)]
        if bad:
            raise NonFiniteVocoderLossError(
                f"non-finite vocoder loss term(s) {bad} at step {self.global_step}; lower the learning rate "
                f"(e.g. --lr {self.cfg.optim.lr / 3:.1e}) and run `voicetrain check` on the dataset")

    def validation_step(self, batch: VocoderBatch, batch_idx: int):
        fake = self.generator(batch.mels)
        terms = self.reconstruction_losses(fake, batch.audio)
        # val/loss is the log-mel L1 alone: comparable across runs whatever the loss weights
        self.log_dict({"val/loss": terms["mel"], **{f"val/{k}": v for k, v in terms.items()}},
                      batch_size=len(batch), on_epoch=True, sync_dist=True)
        if batch_idx == 0:
            self.val_audio = []
        self.val_audio += [(i, fake[b].detach().float().cpu()) for b, i in enumerate(batch.ids)]

    # ----------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        o = self.cfg.optim
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        opt_g = torch.optim.AdamW(self.generator.parameters(), lr=o.lr, betas=tuple(o.betas),
                                  weight_decay=o.weight_decay, fused=fused)
        opt_d = torch.optim.AdamW(self._d_params(), lr=o.lr,
                                  betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused)
        max_steps = max(self.cfg.train.max_steps, 1)

        def factor(step: int) -> float:
            if o.decay == "cosine":
                return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max_steps, 1.0)))
            return 1.0

        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt_g, factor),
                                torch.optim.lr_scheduler.LambdaLR(opt_d, factor)]

    # ----------------------------------------------------------------- checkpoints
    def voicetrain_payload(self) -> dict[str, Any]:
        """What a checkpoint needs to load on its own (plain types only: weights_only-safe)."""
        return {"schema_version": SCHEMA_VERSION, "version": __version__, "kind": "vocoder",
                "vocoder": self.cfg.model, "model_config": dict(self.model_config), "audio": to_dict(self.cfg.audio),
                "vocoder_run_config": to_dict(self.cfg)}
