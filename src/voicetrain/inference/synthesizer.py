"""Text -> waveform with a trained acoustic model and a vocoder.

The same tokenizer code path as data preparation (normalize -> espeak phonemes ->
symbol ids); long text is split into sentences, synthesized one by one and joined
with a short pause.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from voicetrain.config import AudioConfig
from voicetrain.data.cache import FeatureStats
from voicetrain.inference.checkpoint import choose_checkpoint, load_model
from voicetrain.run_config import RunConfig
from voicetrain.text.symbols import SymbolTable
from voicetrain.text.tokenizer import NoSpeakableTextError, Tokenizer, split_sentences
from voicetrain.inference.vocoder import load_vocoder, vocoder_for_run
from voicetrain.vocoders import Vocoder


class UnknownSpeakerError(ValueError):
    pass


@dataclass
class Synthesizer:
    model: torch.nn.Module
    vocoder: Vocoder
    tokenizer: Tokenizer
    stats: FeatureStats
    audio: AudioConfig
    speakers: list[str]
    checkpoint: str = ""
    checkpoint_reason: str = ""
    """Why ``checkpoint`` was chosen (see :func:`voicetrain.inference.checkpoint.choose_checkpoint`)."""
    sentence_pause: float = 0.25
    speaker_aliases: dict[str, str] = field(default_factory=dict)
    """Dataset speaker name -> speaker-table name (a voice fine-tuned with --speaker-name)."""
    threads: int = 1
    """torch threads during synthesis. One is fastest here: on 2 busy cores, 2 threads made
    Griffin-Lim 10x slower (bench/synth.py). Set for the call and restored afterwards."""

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, which: str = "best", vocoder: Vocoder | str | None = None,
                        griffin_lim_iters: int = 32) -> "Synthesizer":
        """Load from a run folder (checkpoint chosen by ``which``) or a checkpoint file.

        ``vocoder``: a Vocoder, 'griffin-lim', a vocoder RUN folder / checkpoint, or None for the one the
        run names (``RunConfig.vocoder``).
        """
        choice = choose_checkpoint(path, which)
        loaded = load_model(choice.path)
        synth = cls.from_parts(loaded.model, loaded.run_cfg, loaded.symbols, loaded.stats, vocoder,
                               griffin_lim_iters, checkpoint=str(choice.path))
        synth.checkpoint_reason = choice.reason
        return synth

    @classmethod
    def from_parts(cls, model, run_cfg: RunConfig, symbols: SymbolTable, stats: FeatureStats,
                   vocoder: Vocoder | str | None = None, griffin_lim_iters: int = 32,
                   checkpoint: str = "") -> "Synthesizer":
        """``vocoder`` as in :meth:`from_checkpoint`. An explicitly named vocoder must exist and fit the
        voice's mels; a run's own vocoder that has gone missing falls back to Griffin-Lim with a warning."""
        if isinstance(vocoder, (str, os.PathLike)):
            vocoder = load_vocoder(vocoder, run_cfg.audio, griffin_lim_iters)
        elif vocoder is None:
            vocoder = vocoder_for_run(run_cfg.vocoder, run_cfg.audio, griffin_lim_iters)
        return cls(model.eval(), vocoder.eval(), Tokenizer(run_cfg.text, symbols), stats, run_cfg.audio,
                   list(run_cfg.speakers), checkpoint, speaker_aliases=dict(run_cfg.speaker_map))

    def knows_speaker(self, name: str) -> bool:
        return name in self.speakers or name in self.speaker_aliases

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    def speaker_id(self, speaker: str | int | None) -> int:
        if speaker is None:
            return 0
        if isinstance(speaker, str) and speaker not in self.speakers and speaker in self.speaker_aliases:
            speaker = self.speaker_aliases[speaker]
        if isinstance(speaker, int) or (isinstance(speaker, str) and speaker.isdigit() and speaker not in self.speakers):
            sid = int(speaker)
            if not 0 <= sid < max(len(self.speakers), 1):
                raise UnknownSpeakerError(f"speaker id {sid} out of range; this voice has {len(self.speakers)} speaker(s)")
            return sid
        if speaker not in self.speakers:
            raise UnknownSpeakerError(f"unknown speaker {speaker!r}; this voice has: {', '.join(self.speakers)}")
        return self.speakers.index(speaker)

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.stats.mel_mean, dtype=mel.dtype)[:, None]
        std = torch.tensor(self.stats.mel_std, dtype=mel.dtype)[:, None]
        return mel * std + mean

    @torch.inference_mode()
    def mel_for_ids(self, ids: list[int], speaker: int = 0, speed: float = 1.0) -> torch.Tensor:
        """Token ids -> un-normalized log-mel (n_mels, T)."""
        tokens = torch.tensor([ids], dtype=torch.long)
        mel, lens = self.model.infer(tokens, torch.tensor([speaker]), speed=speed)
        return self.denormalize(mel[0, :, : int(lens[0])])

    @torch.inference_mode()
    def synthesize(self, text: str, speaker: str | int | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Text -> (float32 samples, sample rate). Raises NoSpeakableTextError for text with nothing to say."""
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed {speed} out of range [0.25, 4.0]")
        sid = self.speaker_id(speaker)
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._synthesize(text, sid, speed)
        finally:
            torch.set_num_threads(before)

    def _synthesize(self, text: str, sid: int, speed: float) -> tuple[np.ndarray, int]:
        pieces: list[np.ndarray] = []
        pause = np.zeros(int(self.sentence_pause * self.sample_rate), dtype=np.float32)
        for sentence in split_sentences(text):
            try:
                ids, _ = self.tokenizer(sentence)
            except NoSpeakableTextError:
                continue
            mel = self.mel_for_ids(ids, sid, speed)
            wav = self.vocoder(mel[None])[0].float().numpy()
            if pieces:
                pieces.append(pause)
            pieces.append(wav)
        if not pieces:
            raise NoSpeakableTextError(f"text {text[:60]!r} has no speakable content after normalization")
        audio = np.concatenate(pieces)
        peak = float(np.abs(audio).max()) or 1.0
        return (audio / peak * 0.95 if peak > 1.0 else audio).astype(np.float32), self.sample_rate


def load_synthesizer(path: str | os.PathLike, which: str = "best") -> Synthesizer:
    return Synthesizer.from_checkpoint(Path(path), which)
