"""Training callbacks: metrics file + loss plot, audio/mel/alignment samples, health checks, progress."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging
from rich.console import Console

from voicetrain.audio.io import save_wav
from voicetrain.training import plots


def alignment_health(soft: torch.Tensor, text_lens: torch.Tensor, mel_lens: torch.Tensor) -> dict[str, float]:
    """Focus and diagonality of soft attention (B, T, L), both in [0, 1].

    focus: mean over valid frames of the largest attention weight (1 = each frame looks at one token).
    diagonality: 1 - mean |argmax token / L - frame / T| * 2, clipped (1 = on the diagonal).
    """
    focus, diag = [], []
    for b in range(soft.shape[0]):
        t, l = int(mel_lens[b]), int(text_lens[b])
        a = soft[b, :t, :l].float()
        if a.numel() == 0:
            continue
        focus.append(float(a.max(dim=1).values.mean()))
        pos = a.argmax(dim=1).float() / max(l - 1, 1)
        ref = torch.linspace(0, 1, t)
        diag.append(float(max(0.0, 1 - 2 * (pos - ref).abs().mean())))
    return {"focus": float(np.mean(focus)) if focus else 0.0, "diagonality": float(np.mean(diag)) if diag else 0.0}


class MetricsFile(L.Callback):
    """RUN/metrics.csv (one row per logged step) and RUN/loss.png, refreshed during training.

    On resume, rows past the resumed step are dropped so the file matches the checkpoint.
    """

    def __init__(self, run_dir: Path, log_every: int, plot_key: str = "loss"):
        self.path = run_dir / "metrics.csv"
        self.plot_path = run_dir / "loss.png"
        self.plot_key = plot_key
        """Metric plotted for train and val (vocoder runs plot 'mel': their train loss includes GAN terms)."""
        self.log_every = max(log_every, 1)
        self.rows: list[dict[str, Any]] = []
        self.start = time.time()
        self.time_offset = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # under DDP only rank 0 writes
            return
        # global_step is restored from a checkpoint only after on_fit_start
        step = trainer.global_step
        if self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [self._parse(r) for r in csv.DictReader(f)]
            self.rows = [r for r in self.rows if r["step"] <= step]
            self.time_offset = max((r.get("wall_s") or 0.0 for r in self.rows), default=0.0)
        self.start = time.time()
        self._write()

    @staticmethod
    def _parse(r: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in r.items():
            if v in ("", None):
                continue
            out[k] = int(v) if k == "step" else float(v)
        return out

    def _wall(self) -> float:
        return self.time_offset + time.time() - self.start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.log_every or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        row = {"step": step, "wall_s": round(self._wall(), 2), "epoch": trainer.current_epoch,
               "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        row.update({k: float(v) for k, v in m.items() if k.startswith("train/")})
        self.rows.append(row)
        if step % (self.log_every * 10) == 0:
            self._write()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"step": trainer.global_step, "wall_s": round(self._wall(), 2)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()
                    if k.startswith(("val/", "align/", "quality/"))})
        self.rows.append(row)
        self._write()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._write()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # every checkpoint has its rows on disk: a kill after it loses no row the checkpoint covers
        if trainer.is_global_zero:
            self._write()

    def _write(self) -> None:
        from voicetrain.fileio import atomic_write_text
        import io

        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys or ["step"])
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        if any("val/loss" in r for r in self.rows) or len(self.rows) > 1:
            plots.plot_losses(self.rows, self.plot_path, key=self.plot_key)


class SampleWriter(L.Callback):
    """Every N steps: synthesize fixed validation sentences (wav under RUN/samples and TensorBoard audio),
    and log the first validation batch's mel and alignment as images."""

    uses_weights_at_validation_end = True
    """Synthesizes in ``on_validation_end``: must run while :class:`EMAWeights` has the average swapped in."""

    def __init__(self, run_dir: Path, every: int, sentences: list[tuple[str, list[int], int]], make_synth):
        self.dir = run_dir / "samples"
        self.every = max(every, 1)
        self.sentences = sentences  # (id, token ids, speaker id)
        self.make_synth = make_synth
        self.last_step = -1

    def _tb(self, trainer):
        for lg in trainer.loggers:
            if hasattr(lg, "experiment") and hasattr(lg.experiment, "add_audio"):
                return lg.experiment
        return None

    def on_validation_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        tb = self._tb(trainer)
        vb = pl_module.last_val_batch
        if vb is not None:
            batch, out = vb
            t, l = int(batch.mel_lens[0]), int(batch.token_lens[0])
            att = out.soft_attention[0, :t, :l].detach().float().numpy() if hasattr(out, "soft_attention") else None
            fig = plots.mel_alignment_figure(out.mel[0, :, :t].detach().float().numpy(),
                                             batch.mels[0, :, :t].float().numpy(), att)
            if tb is not None:
                tb.add_image("val/mel_alignment", plots.figure_to_array(fig), step, dataformats="HWC")
            self.dir.mkdir(parents=True, exist_ok=True)
            plots.save_figure(fig, self.dir / "alignment_latest.png")
        if step - self.last_step < self.every and self.last_step >= 0:
            return
        self.last_step = step
        synth = self.make_synth(pl_module)
        was_training = pl_module.model.training
        pl_module.model.eval()
        try:
            out_dir = self.dir / f"step_{step:07d}"
            for sid, ids, spk in self.sentences:
                mel = synth.mel_for_ids(ids, spk)
                wav = synth.vocoder(mel[None])[0].float().numpy()
                peak = float(abs(wav).max(initial=0.0))
                if peak > 0.99:  # an early model's mels can overshoot: scale, as synthesis does, not clip
                    wav = wav * (0.95 / peak)
                save_wav(out_dir / f"{sid}.wav", wav, synth.sample_rate)
                if tb is not None:
                    tb.add_audio(f"samples/{sid}", torch.from_numpy(wav)[None], step, sample_rate=synth.sample_rate)
        finally:
            pl_module.model.train(was_training)


class VocoderSamples(L.Callback):
    """Every N steps: the vocoded validation utterances (kept by the module's validation) to
    RUN/samples/step_N/ID.wav and TensorBoard; the real recordings once to RUN/samples/real/."""

    def __init__(self, run_dir: Path, every: int, sample_rate: int, real: list[tuple[str, np.ndarray]]):
        self.dir = run_dir / "samples"
        self.every = max(every, 1)
        self.sample_rate = sample_rate
        self.real = real
        self.last_step = -1

    def on_validation_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if step - self.last_step < self.every and self.last_step >= 0:
            return
        tb = next((lg.experiment for lg in trainer.loggers
                   if hasattr(lg, "experiment") and hasattr(lg.experiment, "add_audio")), None)
        if self.last_step < 0:
            for uid, wav in self.real:
                save_wav(self.dir / "real" / f"{uid}.wav", wav, self.sample_rate)
        self.last_step = step
        for uid, wav in pl_module.val_audio:
            save_wav(self.dir / f"step_{step:07d}" / f"{uid}.wav", wav.numpy(), self.sample_rate)
            if tb is not None:
                tb.add_audio(f"samples/{uid}", wav[None].clamp(-1, 1), step, sample_rate=self.sample_rate)


def ema_decay_at(n_averaged: int, max_decay: float) -> float:
    """EMA decay after ``n_averaged`` updates: (1 + n) / (10 + n), capped at ``max_decay``.

    The ramp keeps the average close to the live weights early on (window ~17 steps at step
    150, ~80 at step 700), so the 1- and 5-minute voices are not dragged back towards the
    random initialisation, and reaches the long-run window (1 / (1 - max_decay)) later.
    """
    return min(max_decay, (1.0 + n_averaged) / (10.0 + n_averaged))


class EMAWeights(WeightAveraging):
    """Exponential moving average of the weights (Lightning's WeightAveraging), with a warm-up ramp.

    Validation, the fixed samples and every checkpoint's ``state_dict`` use the averaged
    weights, so best-checkpoint selection, ``synth`` and ``eval`` all see the voice that is
    shipped; the live weights travel in the checkpoint as ``current_model_state`` so that
    ``--resume`` continues exactly. Averaging is ``lerp``, which leaves a frozen parameter
    bit-identical.

    Must come after SampleWriter, HealthCheck and MetricsFile in the callback list: the
    averaged weights are swapped in at the start of validation and swapped back in this
    callback's ``on_validation_end``, so the callbacks before it see them in theirs
    (Lightning runs the ModelCheckpoint callbacks last, after the swap back). A callback that
    needs the average there says so with ``uses_weights_at_validation_end = True``; ``setup`` refuses
    a list that puts one after this callback.
    """

    def __init__(self, max_decay: float):
        def multi_avg_fn(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
            weight = 1.0 - ema_decay_at(int(n_averaged), max_decay)
            torch._foreach_lerp_(averaged, current, weight)

        super().__init__(use_buffers=False, multi_avg_fn=multi_avg_fn)

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Lightning calls callbacks in list order: one that uses the weights in on_validation_end after
        # this one would silently get the live weights instead of the average
        late = [type(c).__name__ for c in trainer.callbacks[trainer.callbacks.index(self) + 1:]
                if getattr(c, "uses_weights_at_validation_end", False)]
        if late:
            raise RuntimeError(f"EMAWeights must come after {', '.join(late)} in the callback list: they use the "
                               "averaged weights in on_validation_end, which EMAWeights swaps back in its own")
        super().setup(trainer, pl_module, stage)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pass  # swapped back in on_validation_end instead, after the samples are written

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        # keep the live weights in the module: a checkpoint saved after fit() must still resume
        # exactly; the averaged weights are what every checkpoint's state_dict holds anyway
        pass


class HealthCheck(L.Callback):
    """Catches the classic failure modes early and says what to do.

    - loss not decreasing after warm-up;
    - alignment not forming (low focus/diagonality after ``align_deadline`` steps);
    - validation loss rising while training loss falls (overfitting), with optional early stop.
    Warnings go to the console and RUN/health.jsonl.
    """

    def __init__(self, run_dir: Path, warmup_steps: int, align_deadline: int = 1500, patience: int = 0,
                 console: Console | None = None, align_threshold: float = 0.5, quality_tracked: bool = False):
        self.path = run_dir / "health.jsonl"
        self.warmup = warmup_steps
        self.align_deadline = align_deadline
        self.align_threshold = align_threshold
        self.patience = patience
        self.console = console or Console(stderr=True)
        self.val_history: list[tuple[int, float, float, float]] = []  # step, val loss, train loss, quality
        self.best_val = math.inf
        self.bad_vals = 0
        self.warned: set[str] = set()
        self.train_losses: list[tuple[int, float]] = []
        self.quality_tracked = quality_tracked
        """QualityTracker judges overfitting and early stopping; a rising validation loss is only reported."""
        self.writes = True
        """False on DDP ranks other than 0: they decide as rank 0 does (same validation set, same weights)
        but print and write nothing."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.writes = trainer.is_global_zero

    def warn(self, kind: str, step: int, message: str, once: bool = True) -> None:
        if once and kind in self.warned:
            return
        self.warned.add(kind)
        if not self.writes:
            return
        self.console.print(f"[yellow]health check ({kind}) at step {step}:[/yellow] {message}")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "kind": kind, "message": message}) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.train_losses.append((trainer.global_step, float(loss)))
            self.train_losses = self.train_losses[-2000:]

    def _train_mean(self, lo: int, hi: int) -> float | None:
        vals = [v for s, v in self.train_losses if lo <= s < hi]
        return float(np.mean(vals)) if vals else None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        step = trainer.global_step
        m = trainer.callback_metrics
        # alignment health
        vb = pl_module.last_val_batch
        if vb is not None and hasattr(vb[1], "soft_attention"):
            batch, out = vb
            h = alignment_health(out.soft_attention.detach(), batch.token_lens, batch.mel_lens)
            trainer.callback_metrics["align/focus"] = torch.tensor(h["focus"])
            trainer.callback_metrics["align/diagonality"] = torch.tensor(h["diagonality"])
            for lg in trainer.loggers:
                lg.log_metrics({"align/focus": h["focus"], "align/diagonality": h["diagonality"]}, step)
            if step >= self.align_deadline and h["diagonality"] < self.align_threshold:
                self.warn("alignment", step,
                          f"alignment has not formed (diagonality {h['diagonality']:.2f}, focus {h['focus']:.2f}). "
                          "Check that transcripts match the audio (`voicetrain prepare` quarantines speaking-rate "
                          "outliers), trim long silences, and lower the learning rate if the loss is noisy."
                          # model-specific remedies live with the model (e.g. Tacotron 2's guided attention)
                          + getattr(pl_module.model, "alignment_advice", ""))
        # loss not decreasing after warm-up
        if step >= 3 * self.warmup and step >= 300:
            early = self._train_mean(self.warmup, self.warmup + 100)
            late = self._train_mean(step - 100, step + 1)
            if early is not None and late is not None and late > 0.97 * early:
                self.warn("no-progress", step,
                          f"training loss is not decreasing (mean {early:.3f} after warm-up, {late:.3f} now). "
                          "Try a lower learning rate (--lr), a larger batch (--batch-size / --accumulate), "
                          "or `--overfit 4` to prove the pipeline can memorize.")
        # overfitting
        val = m.get("val/loss")
        if val is None:
            return
        val = float(val)
        train_now = self._train_mean(step - 100, step + 1) or math.nan
        quality = m.get("quality/score")
        self.val_history.append((step, val, train_now, float(quality) if quality is not None else math.nan))
        if val < self.best_val - 1e-4:
            self.best_val, self.bad_vals = val, 0
        else:
            self.bad_vals += 1
        if len(self.val_history) >= 3:
            (s0, v0, t0, q0), (s1, v1, t1, q1), (s2, v2, t2, q2) = self.val_history[-3:]
            if v2 > v1 > v0 and t2 < t0 and self.quality_tracked:
                if not q2 < q0:  # NaN-safe: a missing score is not a fall
                    self.warn("val-loss-rising", step,
                              f"validation loss rose for 2 validations ({v0:.3f} -> {v2:.3f}) while the quality score "
                              f"held or improved ({q0:.3f} -> {q2:.3f}). That is the model no longer averaging "
                              "prosody, not overfitting: quality (Whisper CER, speaker similarity) decides which "
                              "checkpoint is kept.")
            elif v2 > v1 > v0 and t2 < t0:
                self.warn("overfitting", step,
                          f"validation loss rose for 2 validations ({v0:.3f} -> {v2:.3f}) while training loss fell "
                          f"({t0:.3f} -> {t2:.3f}): the model is overfitting. Use the best checkpoint (kept "
                          "automatically), add data, or enable early stopping (--early-stop N).")
        if self.patience and not self.quality_tracked and self.bad_vals >= self.patience:
            self.warn("early-stop", step, f"validation loss has not improved for {self.patience} validations; stopping.")
            trainer.should_stop = True


class TimeSnapshots(L.Callback):
    """Saves a checkpoint when training wall time passes each mark (minutes), counted across resumes."""

    def __init__(self, ckpt_dir: Path, minutes: list[float]):
        self.ckpt_dir = ckpt_dir
        self.marks = sorted(minutes)
        self.start = time.time()
        self.offset = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.time()
        done = [p for p in self.ckpt_dir.glob("time=*min-step=*.ckpt")]
        self.marks = [m for m in self.marks if not any(p.name.startswith(f"time={m:g}min-") for p in done)]
        timer = next((c for c in trainer.callbacks if type(c).__name__ == "Timer"), None)
        if timer is not None:
            self.offset = timer.time_elapsed("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.marks:
            return
        elapsed = (self.offset + time.time() - self.start) / 60
        if trainer.world_size > 1:  # saving is collective: every rank must save at the same step, rank 0's
            elapsed = trainer.strategy.broadcast(elapsed, src=0)
        while self.marks and elapsed >= self.marks[0]:
            m = self.marks.pop(0)
            trainer.save_checkpoint(self.ckpt_dir / f"time={m:g}min-step={trainer.global_step}.ckpt")
