"""Out-of-memory during training: recognise it, halve the batch, double accumulation, or give up clearly.

``train`` (training/train.py) catches an out-of-memory error out of ``fit``, asks :func:`halved` for the
next settings (half the per-step batch, twice the accumulation: the same effective batch, so the same
learning-rate schedule per optimizer step), saves them in RUN/config.yaml and resumes from the last
checkpoint; :class:`TrainingOutOfMemory` ends it once the batch is 1.

:class:`InjectedOOM` is the fault hook the tests (and a forced check on a real device) use:
``VOICETRAIN_FAULT_OOM_AT_STEP=K`` (or ``K:N`` for N times) raises ``torch.cuda.OutOfMemoryError`` when a
training batch starts at global step K. Unset, nothing is added to the run.
"""

from __future__ import annotations

import dataclasses
import os

import torch

FAULT_ENV = "VOICETRAIN_FAULT_OOM_AT_STEP"

# what the CPU and MPS allocators say (they raise a plain RuntimeError; CUDA's is torch.OutOfMemoryError)
_MESSAGES = ("can't allocate memory", "CUDA out of memory", "MPS backend out of memory", "HIP out of memory")


class TrainingOutOfMemory(RuntimeError):
    """Out of memory even at batch 1 (or under DDP, where one rank cannot recover alone); says what to do."""


def is_out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError (torch.cuda.OutOfMemoryError is the same class), or an allocator's RuntimeError
    such as 'DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes'."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and any(m in str(e) for m in _MESSAGES))


def halved(train_cfg, error: BaseException):
    """``train_cfg`` (a TrainConfig) with half the batch and twice the accumulation; TrainingOutOfMemory at batch 1."""
    bs, acc = train_cfg.batch_size, train_cfg.accumulate
    if bs <= 1:
        raise TrainingOutOfMemory(
            f"out of memory at batch 1 (accumulate {acc}): {first_line(error)}. One utterance does not fit: "
            "use a smaller --preset (cpu, tiny), --precision bf16-mixed (16-mixed on GPUs before Ampere), "
            "shorter utterances (prepare with a lower qc.max_seconds), or a device with more memory") from error
    return dataclasses.replace(train_cfg, batch_size=bs // 2, accumulate=acc * 2)


def fallback_message(old, new, step: int | None, error: BaseException) -> str:
    """The one line a fallback prints (and health.jsonl keeps)."""
    eff_old, eff_new = old.batch_size * old.accumulate, new.batch_size * new.accumulate
    same = "the same effective batch" if eff_old == eff_new else f"effective batch {eff_old} -> {eff_new}"
    return (f"out of memory{f' at step {step}' if step is not None else ''} ({first_line(error)}): batch "
            f"{old.batch_size} -> {new.batch_size}, accumulate {old.accumulate} -> {new.accumulate} ({same}), "
            "saved in RUN/config.yaml; resuming from the last checkpoint. To skip the retries next time, start "
            f"with --batch-size {new.batch_size} --accumulate {new.accumulate}, or a smaller --preset")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def injected_oom_callback():
    """The fault hook's callback when VOICETRAIN_FAULT_OOM_AT_STEP is set, else None."""
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return None
    step, _, times = spec.partition(":")
    from lightning.pytorch.callbacks import Callback

    class InjectedOOM(Callback):
        """Raises torch.cuda.OutOfMemoryError as batch ``step`` starts; counts down in the environment so a
        resumed attempt in the same process (or a restarted one) sees how many faults are left."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            spec = os.environ.get(FAULT_ENV, "")
            at, _, left = spec.partition(":")
            if not spec or trainer.global_step != int(at):
                return
            left_n = int(left or 1) - 1
            if left_n > 0:
                os.environ[FAULT_ENV] = f"{at}:{left_n}"
            else:
                os.environ.pop(FAULT_ENV, None)
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (injected by {FAULT_ENV} at step {at}, batch of {len(batch)})")

    int(step), int(times or 1)  # a malformed spec fails here, before training
    return InjectedOOM()


__all__ = ["TrainingOutOfMemory", "is_out_of_memory", "halved", "fallback_message", "injected_oom_callback", "FAULT_ENV"]
