"""The one training loop both trainers use: resume, threads, checkpoints, the Lightning Trainer, result.json.

``train`` (acoustic models) and ``train_vocoder`` differ in what they build (networks, datasets,
callbacks of their own); everything around ``Trainer.fit`` is here, once:

* :func:`keep_threads` restores the process's torch thread count afterwards;
* :func:`resume_point` cleans a killed save's temp files and peeks into the newest intact checkpoint
  once (step, sampler position);
* :func:`fastest_thread_count` measures 1 vs all cores where the run asks for automatic threads;
* :func:`checkpoint_pair` (periodic ``step=N`` + ``last``, and ``best-step=N`` by validation loss) and
  :class:`FinalCheckpoint`, the one mechanism that saves a run stopped by max_steps, time or early stopping;
* :class:`ResumableModule`, the Lightning modules' checkpoint hooks (payload, sampler position, RNG state);
* :func:`fit`: warning filters, the Trainer (no DistributedSampler: the batch samplers shard per rank), ``fit``
  and its wall time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import resource
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from voicetrain.fileio import atomic_write_text
from voicetrain.training.oom import injected_oom_callback, is_out_of_memory


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def keep_threads() -> Iterator[None]:
    """Restore the process's torch thread count when the block ends: a trainer sets its own."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fastest_thread_count(measure: Callable[[], tuple[float, ...]],
                         thread_options: tuple[int, ...]) -> tuple[int, dict[int, tuple[float, ...]]]:
    """Run ``measure`` (returning seconds per step first) under each torch thread count in
    ``thread_options`` (or the current one); leave the fastest set and return it with every result.

    On 2 cores shared with other work, 2 torch threads can be several times slower than 1: only a
    measurement tells."""
    results: dict[int, tuple[float, ...]] = {}
    for threads in thread_options or (torch.get_num_threads(),):
        torch.set_num_threads(threads)
        results[threads] = measure()
    best = min(results, key=lambda k: results[k][0])
    torch.set_num_threads(best)
    return best, results


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    ckpt_path: str | None = None
    """The checkpoint ``fit`` resumes from (None: a fresh start)."""
    step: int = 0
    skip: tuple[int, int] | None = None
    """(epoch, batches done) of the resumed epoch: the sampler skips those batches."""
    batch_size: int | None = None
    """The training batch those batches had (None: a checkpoint from before it was recorded)."""

    def skip_for(self, batch_size: int) -> tuple[int, int] | None:
        """``skip`` in batches of ``batch_size``: after an out-of-memory fallback halved the batch, the resumed
        epoch skips twice as many batches (the same share of its utterances; not the same ones: a plan of
        smaller batches groups them differently, so such a resume is not bit-exact)."""
        if self.skip is None or not self.batch_size or self.batch_size == batch_size:
            return self.skip
        return self.skip[0], round(self.skip[1] * self.batch_size / batch_size)


def resume_point(ckpt_dir: Path, resume: bool | str) -> ResumePoint:
    """Where a run continues. resume: 'auto' continues from last.ckpt when it exists; True requires it.

    A killed save leaves temp files (removed here) and can leave last.ckpt older than a periodic
    checkpoint: the newest intact one is taken. The checkpoint is read once, for step and sampler position.
    """
    from voicetrain.inference.checkpoint import load_checkpoint_safe
    from voicetrain.training.checkpoint_io import newest_resumable, remove_stale_temp_files

    last = ckpt_dir / "last.ckpt"
    if resume and resume != "auto" and not last.exists():
        raise FileNotFoundError(f"--resume given but {last} does not exist")
    remove_stale_temp_files(ckpt_dir)
    if not (resume and last.exists()):
        return ResumePoint()
    path = newest_resumable(ckpt_dir) or last
    peek = load_checkpoint_safe(path)
    data = peek.get("voicetrain_data")
    return ResumePoint(str(path), int(peek.get("global_step", 0)),
                       (data["epoch"], data["batches_done"]) if data else None,
                       (data or {}).get("batch_size"))


def checkpoint_pair(ckpt_dir: Path, every_steps: int, keep_last: int):
    """Periodic ``step=N.ckpt`` (the newest ``keep_last``; -1 keeps all) plus ``last.ckpt``, and
    ``best-step=N.ckpt``, the lowest validation loss."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    periodic = ModelCheckpoint(dirpath=ckpt_dir, filename="step={step}", auto_insert_metric_name=False,
                               every_n_train_steps=every_steps, save_top_k=keep_last,
                               monitor="step", mode="max", save_last=True, save_on_train_epoch_end=False)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-step={step}", auto_insert_metric_name=False,
                           monitor="val/loss", mode="min", save_top_k=1, save_last=False)
    return periodic, best


def _final_checkpoint_class():
    from lightning.pytorch.callbacks import Checkpoint

    class FinalCheckpoint(Checkpoint):
        """Saves step=N.ckpt and last.ckpt when the run stops (max_steps, time, early stopping, SIGTERM), *inside*
        the loop.

        A save after ``fit`` returns records a mid-epoch stop as a finished epoch (Lightning closes the epoch
        when max_steps or max_time ends it), so a resume from it would skip the rest of that epoch's batches.
        Being a Checkpoint, this runs after Lightning's Timer and so sees its stop request; a stop decided at
        validation (early stopping) is saved at validation end.
        """

        def __init__(self, ckpt_dir: Path):
            self.ckpt_dir = Path(ckpt_dir)

        def _save_if_stopping(self, trainer) -> None:
            step = trainer.global_step
            last = 0 < trainer.max_steps <= step
            # SIGTERM (`voicetrain studio`'s pause, a scheduler's stop): Lightning raises after this batch's
            # hooks, so saving here keeps every finished step for the resume
            stopping = trainer.should_stop or trainer.received_sigterm
            if step > 0 and (last or stopping) and not (self.ckpt_dir / f"step={step}.ckpt").exists():
                trainer.save_checkpoint(self.ckpt_dir / f"step={step}.ckpt")
                trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._save_if_stopping(trainer)

        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self._save_if_stopping(trainer)

    return FinalCheckpoint


def final_checkpoint(ckpt_dir: Path):
    return _final_checkpoint_class()(ckpt_dir)


def progress_bar():
    """Lightning's rich progress bar, without its "Epoch 3/-2": a run capped by steps or minutes has no epoch cap
    (max_epochs -1), and Lightning 2.6 prints max_epochs - 1 regardless."""
    from lightning.pytorch.callbacks import RichProgressBar

    class RunProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            text = super()._get_train_description(current_epoch)
            if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
                # padded as Lightning pads it: as wide as "Validation", so the bar does not jump
                text = f"{text.replace(f'/{self.trainer.max_epochs - 1}', '', 1).rstrip():{len(self.validation_description)}}"
            return text

    return RunProgressBar()


class ResumableModule:
    """Checkpoint hooks shared by the Lightning modules (mixed in before ``L.LightningModule``).

    Every checkpoint carries ``voicetrain_payload()`` (what it needs to load on its own, plain types only:
    weights_only-safe), the sampler position and the RNG state, so that a resume is exact.
    """

    _rng_state: torch.Tensor | None = None

    def voicetrain_payload(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["voicetrain"] = self.voicetrain_payload()
        # 'processed', not 'completed': a checkpoint saved in on_train_batch_end runs before
        # Lightning counts that batch completed, and resuming must not replay it
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        checkpoint["voicetrain_data"] = {"epoch": int(self.current_epoch), "batches_done": int(done),
                                         "batch_size": getattr(sampler, "batch_size", None)}
        checkpoint["voicetrain_rng"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_state = checkpoint.get("voicetrain_rng")

    def on_train_start(self) -> None:
        if self._rng_state is not None:
            torch.set_rng_state(self._rng_state)
            self._rng_state = None


def fit(lit, train_loader, val_loader, run_dir: Path, t, callbacks: list, resume: ResumePoint, *,
        find_unused_parameters: bool = False, **trainer_kw):
    """Run Lightning's loop with the run's settings ``t`` (a TrainConfig or VocoderTrainConfig) and the
    :class:`FinalCheckpoint` appended to ``callbacks``; returns (trainer, wall seconds).

    ``find_unused_parameters``: under DDP (more than one process) let a step leave parameters without
    gradients, as the GAN's discriminator step does with the generator's."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from voicetrain.training.checkpoint_io import AtomicCheckpointIO

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LightningModule.*")
    # mid-epoch resume is exact here: the batch samplers skip the consumed batches (tested)
    warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
    # manual optimization (the GAN): the state after the step is what we want saved
    warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
    faults = [f for f in (injected_oom_callback(),) if f is not None]  # the tests' fault hook (training/oom.py)

    def make(**strategy):  # built once more when DDP needs another strategy
        return L.Trainer(
            default_root_dir=str(run_dir), max_steps=t.max_steps,
            max_time={"seconds": int(t.max_minutes * 60)} if t.max_minutes else None,
            accelerator=t.accelerator, devices=t.devices, precision=t.precision,
            val_check_interval=min(t.val_every_steps, max(t.max_steps, 1)), check_val_every_n_epoch=None,
            num_sanity_val_steps=0, log_every_n_steps=t.log_every_steps,
            callbacks=[*callbacks, final_checkpoint(Path(run_dir) / "checkpoints"), progress_bar(), *faults],
            logger=TensorBoardLogger(str(run_dir), name="tb", version="", default_hp_metric=False),
            plugins=[AtomicCheckpointIO()], enable_model_summary=False, benchmark=False, enable_progress_bar=True,
            # under DDP Lightning would swap the batch sampler's sampler for a DistributedSampler (which breaks a
            # batch sampler that orders by length); the training samplers shard their own (seed, epoch) plan instead
            use_distributed_sampler=False,
            **strategy, **trainer_kw,
        )
    trainer = make()
    if find_unused_parameters and trainer.world_size > 1:
        from lightning.pytorch.strategies import DDPStrategy

        trainer = make(strategy=DDPStrategy(find_unused_parameters=True))
    start = time.time()
    try:
        trainer.fit(lit, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume.ckpt_path)
    except Exception as e:
        if is_out_of_memory(e):  # the trainers decide what to do; they need the step and the world size
            raise OutOfMemoryInFit(e, trainer.global_step, trainer.world_size) from e
        raise
    return trainer, time.time() - start


class OutOfMemoryInFit(RuntimeError):
    """``fit`` ran out of memory at ``step`` (global step) in a run of ``world_size`` processes; ``error`` is
    the original. Raised only after Lightning has torn the run down (the last checkpoint is intact)."""

    def __init__(self, error: BaseException, step: int, world_size: int):
        super().__init__(f"out of memory at step {step}: {error}")
        self.error, self.step, self.world_size = error, step, world_size


def write_result(run_dir: Path, result, trainer=None) -> None:
    """RUN/result.json; under DDP rank 0's only."""
    if trainer is not None and not trainer.is_global_zero:
        return
    atomic_write_text(Path(run_dir) / "result.json", json.dumps(dataclasses.asdict(result), indent=1))
