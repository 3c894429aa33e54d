"""evaluation/judges_process.py: the quality judges in a child process give the in-process results."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from voicetrain.audio.io import load_mono
from voicetrain.data.manifest import PreparedDataset
from voicetrain.evaluation.judges_process import JudgeError, JudgesProcess
from voicetrain.evaluation.models import Evaluator, whisper_available

pytestmark = pytest.mark.skipif(not whisper_available(), reason="the eval extra (faster-whisper) is not installed")


def _clip(dataset) -> tuple[np.ndarray, int, str]:
    ds = PreparedDataset.open(dataset)
    u = sorted(ds.manifest("train"), key=lambda u: u.id)[0]
    return (*load_mono(ds.root / u.audio), u.text)


def test_the_child_scores_as_the_process_itself_does(prepared_demo_dataset):
    wav, sr, _ = _clip(prepared_demo_dataset)
    kwargs = dict(asr="whisper", whisper_beam_size=1, torch_threads=1, onnx_threads=1)
    local = Evaluator(**kwargs)
    remote = JudgesProcess(**kwargs)
    try:
        assert remote.pid != os.getpid()
        assert remote.whisper.transcribe(wav, sr, max_new_tokens=40) == local.whisper.transcribe(
            wav, sr, max_new_tokens=40)
        np.testing.assert_allclose(remote.speaker_encoder.embed(wav, sr), local.speaker_encoder.embed(wav, sr),
                                   rtol=1e-5, atol=1e-6)
        with pytest.raises(JudgeError, match="no_such_method"):  # the child's error, named; the child goes on
            remote.whisper.no_such_method(wav)
        assert remote.whisper.transcribe(wav, sr, max_new_tokens=40)
        with pytest.raises(AttributeError, match="serves"):  # only the judges, nothing else of the child
            remote.call("load_seconds.clear")
    finally:
        remote.close()
    assert not remote._proc.is_alive()


def test_the_child_ends_when_its_parent_closes_the_pipe():
    remote = JudgesProcess(asr="whisper")
    remote._conn.close()  # what the parent's death does to the child's pipe
    deadline = time.time() + 60
    while remote._proc.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    assert not remote._proc.is_alive()
