"""The external models behind the metrics, loaded once per :class:`Evaluator` and offline.

* ASR: pocketsphinx 5 with the en-us model inside its wheel.
* Speaker encoder: resemblyzer's VoiceEncoder (weights inside its wheel), on CPU.
* Quality: DNSMOS (P.835 SIG/BAK/OVRL and P.808) from the ONNX files inside speechmos.

Each wrapper takes (samples,) float audio plus its sample rate and resamples itself,
so callers never need to know a model's rate. Nothing is cached at module level: a
process that wants the models once keeps one :class:`Evaluator`.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

import numpy as np

from voicetrain.audio.io import resample
from voicetrain.evaluation.metrics import to_pcm16


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads and restore the previous count after it.

    ``None`` leaves the count alone. torch's thread count is process-wide, so a change
    must never outlive the call that needed it.
    """
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PocketsphinxASR:
    """Offline English ASR for intelligibility scores.

    A pocketsphinx Decoder adapts its feature normalization (live cepstral mean)
    across utterances, so a reused decoder gives order-dependent transcripts. Creating
    a fresh Decoder per utterance costs ~0.45 s here (it reloads the language model);
    calling ``reinit_feat()`` before each utterance resets the same state and was
    measured to give transcripts identical to a fresh decoder in any order
    (tests/test_metrics.py checks both). ``set_cmn`` alone or ``cmn=batch`` did not.
    """

    SAMPLE_RATE = 16000

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        # loglevel FATAL: pocketsphinx otherwise prints hundreds of INFO lines per utterance.
        self._decoder = Decoder(samprate=self.SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        """(samples,) float audio -> raw hypothesis text ('' when nothing was recognized)."""
        d = self._decoder
        d.reinit_feat()
        d.start_utt()
        # full_utt=True: the whole utterance is available, so normalize over all of it.
        d.process_raw(to_pcm16(audio, sr, self.SAMPLE_RATE), no_search=False, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp is not None else ""


class SpeakerEncoder:
    """resemblyzer's d-vector encoder on CPU: (samples,) audio -> L2-normed (256,) embedding."""

    SAMPLE_RATE = 16000

    def __init__(self, torch_threads: int | None = 1) -> None:
        from resemblyzer import VoiceEncoder

        self.torch_threads = torch_threads
        self._encoder = VoiceEncoder(device="cpu", verbose=False)
        self._encoder.eval()

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        # Resample with soxr ourselves (preprocess_wav would use librosa's resampler);
        # preprocess_wav then normalizes volume and shortens long pauses (webrtcvad).
        wav = preprocess_wav(resample(np.asarray(audio, dtype=np.float32), sr, self.SAMPLE_RATE))
        if wav.size == 0:  # all silence: VAD removed everything
            wav = resample(np.asarray(audio, dtype=np.float32), sr, self.SAMPLE_RATE)
        with torch_threads(self.torch_threads):
            return self._encoder.embed_utterance(wav.astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class DnsmosScore:
    """DNSMOS P.835 (signal, background, overall) and P.808 MOS, each on a 1-5 scale."""

    ovrl: float
    sig: float
    bak: float
    p808: float


class Dnsmos:
    """DNSMOS from speechmos' bundled ONNX models, with our own onnxruntime sessions.

    speechmos.dnsmos.run() keeps its model in a module global and opens sessions with
    onnxruntime's default thread pools (one thread per core, spinning); we build the
    sessions here with a bounded thread count and reuse speechmos' scoring code
    (segmenting, mel features, polynomial mapping) so the numbers match the package.
    """

    SAMPLE_RATE = 16000

    def __init__(self, threads: int = 2, personalized: bool = False) -> None:
        # Must precede the first onnxruntime import: newer versions phone a telemetry host.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort
        from speechmos import dnsmos

        base = os.path.dirname(os.path.abspath(dnsmos.__file__))
        primary = os.path.join(base, "pdnsmos_models" if personalized else "dnsmos_models", "sig_bak_ovr.onnx")
        p808 = os.path.join(base, "dnsmos_models", "model_v8.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Spinning worker threads burn a shared 2-core machine between calls.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # skip its __init__: it opens default sessions
        model.primary_model_path = primary
        model.onnx_sess = ort.InferenceSession(primary, sess_options=opts, providers=providers)
        model.p808_onnx_sess = ort.InferenceSession(p808, sess_options=opts, providers=providers)
        self._model = model
        self.personalized = personalized

    def score(self, audio: np.ndarray, sr: int) -> DnsmosScore:
        """(samples,) float audio at any rate -> scores. Clips shorter than 9 s are looped by DNSMOS.

        Digital silence (e.g. the output of an untrained model) scores NaN rather than
        raising: DNSMOS would loop an empty clip forever and its mel features divide by the max.
        """
        x = np.clip(resample(np.asarray(audio, dtype=np.float32), sr, self.SAMPLE_RATE), -1.0, 1.0)
        if x.size == 0 or not np.any(x):
            nan = float("nan")
            return DnsmosScore(ovrl=nan, sig=nan, bak=nan, p808=nan)
        r = self._model(x, self.SAMPLE_RATE, self.personalized)
        return DnsmosScore(ovrl=float(r["ovrl_mos"]), sig=float(r["sig_mos"]), bak=float(r["bak_mos"]),
                           p808=float(r["p808_mos"]))


@dataclass
class Evaluator:
    """Holds the evaluation models, each created on first use and kept for the object's life.

    Keep one Evaluator per process (or per evaluation run) and pass it around; its
    ``load_seconds`` records how long each model took to load.
    """

    torch_threads: int | None = 1
    """torch threads for the speaker encoder (set per call and restored); None = leave as is."""
    onnx_threads: int = 2
    """onnxruntime intra-op threads for DNSMOS (2 measured ~1.5x faster than 1 on this 2-core machine)."""
    load_seconds: dict[str, float] = field(default_factory=dict)

    def _timed(self, name: str, make):
        t = time.perf_counter()
        obj = make()
        self.load_seconds[name] = time.perf_counter() - t
        return obj

    @cached_property
    def asr(self) -> PocketsphinxASR:
        return self._timed("asr", PocketsphinxASR)

    @cached_property
    def speaker_encoder(self) -> SpeakerEncoder:
        return self._timed("speaker_encoder", lambda: SpeakerEncoder(self.torch_threads))

    @cached_property
    def dnsmos(self) -> Dnsmos:
        return self._timed("dnsmos", lambda: Dnsmos(self.onnx_threads))
