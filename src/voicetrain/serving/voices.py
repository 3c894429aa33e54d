"""The voices a server holds, shared by every protocol it speaks (HTTP, OpenAI, Wyoming).

Voices are loaded once into a :class:`VoiceSet`; each is a :class:`ServedVoice` with a few
synthesizer replicas. A request borrows a replica for one sentence at a time, so a long or
slowly read stream never holds one while it waits, and concurrent requests interleave.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np


class ServedVoice:
    """One voice and ``replicas`` synthesizers sharing its model weights.

    A Synthesizer is not safe to call from two threads at once (its tokenizer holds one
    espeak backend), so each replica has its own tokenizer; the model (read-only in
    inference mode) and the vocoder's buffers are shared.
    """

    def __init__(self, voice: Any, replicas: int = 1):
        from voicetrain.text.tokenizer import Tokenizer

        self.voice = voice
        self.synth = voice.synthesizer
        self.pool: queue.SimpleQueue = queue.SimpleQueue()
        self.pool.put(self.synth)
        for _ in range(max(1, replicas) - 1):
            tok = Tokenizer(self.synth.tokenizer.text_cfg, self.synth.tokenizer.symbols)
            self.pool.put(dataclasses.replace(self.synth, tokenizer=tok))
        self.requests = 0
        self._count_lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self.synth.sample_rate

    @property
    def speakers(self) -> list[str]:
        return list(self.synth.speakers)

    def stream(self, text: str, speaker, speed: float, *, continuing: bool = False) -> Iterator[np.ndarray]:
        """Float32 chunks, one per sentence (as Synthesizer.stream). Speaker and speed are checked
        now (UnknownSpeakerError, ValueError); each sentence borrows a free replica when it is made."""
        from voicetrain.inference.synthesizer import join_sentences
        from voicetrain.text.sentences import split_sentences

        self.synth.check_speed(speed)
        sid = self.synth.speaker_id(speaker)
        with self._count_lock:
            self.requests += 1

        def audio_for(sentence: str) -> Optional[np.ndarray]:
            synth = self.pool.get()  # blocks until a replica is free
            try:
                return synth.sentence_audio(sentence, sid, speed)
            finally:
                self.pool.put(synth)

        pause = int(self.synth.sentence_pause * self.sample_rate)
        return join_sentences(split_sentences(text), audio_for, pause, text, continuing)

    def synthesize(self, text: str, speaker, speed: float) -> tuple[np.ndarray, int]:
        return np.concatenate(list(self.stream(text, speaker, speed))), self.sample_rate


class VoiceSet:
    """Served voices by request name; the first is the default.

    A voice is reachable by the name it was loaded under (``demo``, ``demo@v2`` or a bundle
    folder) and also by its bundle name and NAME@VERSION when those are unambiguous.
    """

    def __init__(self, voices: dict[str, Any], replicas: int = 1):
        if not voices:
            raise ValueError("no voices to serve: add one with `voicetrain models add RUN` and name it")
        self.served = {k: ServedVoice(v, replicas=replicas) for k, v in voices.items()}
        self.keys = list(voices)
        self.default = self.keys[0]
        self.by_name = dict(self.served)
        aliases: dict[str, list[str]] = {}
        for key, sv in self.served.items():
            name, version = getattr(sv.voice, "name", None), getattr(sv.voice, "version", None)
            for alias in (name, f"{name}@{version}" if name and version else None):
                if alias and alias not in self.served:
                    aliases.setdefault(alias, []).append(key)
        for alias, keys in aliases.items():
            if len(keys) == 1:
                self.by_name.setdefault(alias, self.served[keys[0]])

    def get(self, name: Optional[str]) -> Optional[ServedVoice]:
        """The voice called ``name`` (None: the default), or None when there is none."""
        return self.by_name.get(self.default if name is None else name)

    def key_of(self, sv: ServedVoice) -> str:
        return next(k for k, v in self.served.items() if v is sv)

    def __len__(self) -> int:
        return len(self.served)


def load_voices(refs: list[str], store=None) -> dict[str, Any]:
    """Load each NAME[@VERSION|@TAG] or bundle folder once; keyed by the reference as given."""
    from voicetrain.inference.bundle import load_voice

    return {ref: load_voice(ref, store=store) for ref in refs}
