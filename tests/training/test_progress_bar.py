"""The training progress bar: no "Epoch 3/-2" for a run without an epoch cap."""

from __future__ import annotations

from types import SimpleNamespace

from voicetrain.training.loop import progress_bar


def _description(max_epochs, epoch: int = 3) -> str:
    bar = progress_bar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)  # what Lightning sets when the bar joins a Trainer
    return bar._get_train_description(epoch)


def test_a_run_capped_by_steps_or_minutes_shows_its_epoch_alone():
    text = _description(-1)
    assert text.strip() == "Epoch 3" and "/" not in text
    assert len(text) == len("Validation")  # as wide as the validation bar's label


def test_an_epoch_cap_is_still_shown():
    assert _description(10).strip() == "Epoch 3/9"
