"""Text -> waveform with a trained acoustic model and a vocoder.

The same tokenizer code path as data preparation (normalize -> espeak phonemes ->
symbol ids); long text is split into sentences, synthesized one by one and joined
with a short pause. ``stream`` yields each sentence's audio as soon as it is made;
``synthesize`` is the same stream joined, so streamed and whole audio are identical.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from voicetrain.config import AudioConfig
from voicetrain.data.cache import FeatureStats
from voicetrain.inference.checkpoint import choose_checkpoint, load_model
from voicetrain.text.symbols import SymbolTable
from voicetrain.text.sentences import split_sentences
from voicetrain.text.tokenizer import NoSpeakableTextError, Tokenizer
from voicetrain.voice_config import VoiceConfig
from voicetrain.inference.vocoder import load_vocoder, vocoder_for_run
from voicetrain.vocoders import Vocoder


class UnknownSpeakerError(ValueError):
    pass


def default_speaker_id(speakers: list[str], speaker_map: dict[str, str]) -> int:
    """The speaker a voice speaks when none is named: a fine-tuned voice's own speaker (the first its dataset
    brought, ``speaker_map``'s target), else 0. Fine-tuning appends the new speaker after the base's, so id 0
    of a voice fine-tuned from the shipped base is one of the base's voices, not the one it was trained for."""
    for name in speaker_map.values():
        if name in speakers:
            return speakers.index(name)
    return 0


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
        voice names (``VoiceConfig.vocoder``).
        """
        choice = choose_checkpoint(path, which)
        loaded = load_model(choice.path)
        synth = cls.from_parts(loaded.model, loaded.voice, loaded.symbols, loaded.stats, vocoder,
                               griffin_lim_iters, checkpoint=str(choice.path))
        synth.checkpoint_reason = choice.reason
        return synth

    @classmethod
    def from_parts(cls, model, voice: VoiceConfig, symbols: SymbolTable, stats: FeatureStats,
                   vocoder: Vocoder | str | None = None, griffin_lim_iters: int = 32,
                   checkpoint: str = "") -> "Synthesizer":
        """``vocoder`` as in :meth:`from_checkpoint`. An explicitly named vocoder must exist and fit the
        voice's mels; a run's own vocoder that has gone missing falls back to Griffin-Lim with a warning."""
        if isinstance(vocoder, (str, os.PathLike)):
            vocoder = load_vocoder(vocoder, voice.audio, griffin_lim_iters)
        elif vocoder is None:
            vocoder = vocoder_for_run(voice.vocoder, voice.audio, griffin_lim_iters)
        return cls(model.eval(), vocoder.eval(), Tokenizer(voice.text, symbols), stats, voice.audio,
                   list(voice.speakers), checkpoint, speaker_aliases=dict(voice.speaker_map))

    def knows_speaker(self, name: str) -> bool:
        return name in self.speakers or name in self.speaker_aliases

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    def speaker_id(self, speaker: str | int | None) -> int:
        if speaker is None:
            return default_speaker_id(self.speakers, self.speaker_aliases)
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

    def check_speed(self, speed: float) -> None:
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed {speed} out of range [0.25, 4.0]")

    def synthesize(self, text: str, speaker: str | int | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Text -> (float32 samples, sample rate). Raises NoSpeakableTextError for text with nothing to say."""
        return np.concatenate(list(self.stream(text, speaker, speed))), self.sample_rate

    def stream(self, text: str, speaker: str | int | None = None, speed: float = 1.0, *,
               continuing: bool = False) -> Iterator[np.ndarray]:
        """Text -> float32 chunks at ``sample_rate``, one per sentence, each made only when asked for.

        Speaker and speed are checked now, before anything is made; a chunk after the first
        starts with the pause between sentences (``continuing``: the first one too, for text
        that continues an earlier stream). NoSpeakableTextError comes at the end when no
        sentence had anything to say (not when ``continuing``: the stream already has audio).
        """
        self.check_speed(speed)
        sid = self.speaker_id(speaker)
        return join_sentences(split_sentences(text), lambda s: self.sentence_audio(s, sid, speed),
                              int(self.sentence_pause * self.sample_rate), text, continuing)

    @torch.inference_mode()
    def sentence_audio(self, sentence: str, sid: int, speed: float = 1.0) -> np.ndarray | None:
        """One sentence -> float32 samples (peak-limited to 0.95), or None when it has nothing to say."""
        try:
            ids, _ = self.tokenizer(sentence)
        except NoSpeakableTextError:
            return None
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            mel = self.mel_for_ids(ids, sid, speed)
            wav = self.vocoder(mel[None])[0].float().numpy()
        finally:
            torch.set_num_threads(before)
        # per sentence, not per text: a stream cannot wait for the loudest sentence of the whole text
        peak = float(np.abs(wav).max()) if wav.size else 0.0
        return (wav / peak * 0.95 if peak > 1.0 else wav).astype(np.float32)


def join_sentences(sentences: list[str], audio_for, pause_samples: int, text: str = "",
                   continuing: bool = False) -> Iterator[np.ndarray]:
    """Yield ``audio_for(sentence)`` for each sentence with something to say (None: nothing), with
    ``pause_samples`` of silence before every chunk but the first (``continuing``: before the first too).
    Raises NoSpeakableTextError after the last sentence when none had anything to say."""
    pause = np.zeros(pause_samples, dtype=np.float32)
    first = not continuing
    for sentence in sentences:
        wav = audio_for(sentence)
        if wav is None:
            continue
        yield wav if first else np.concatenate([pause, wav])
        first = False
    if first and not continuing:
        raise NoSpeakableTextError(f"text {text[:60]!r} has no speakable content after normalization")
