"""Wyoming protocol server (Home Assistant's voice protocol, the ``wyoming`` package) for the served voices.

What Home Assistant's Wyoming integration (and wyoming-piper's clients) expect:

- ``describe`` -> ``info`` with one TTS program, ``voicetrain``, listing every served voice (by
  the name it is served under) with its speakers and language, and
  ``supports_synthesize_streaming``.
- ``synthesize`` -> ``audio-start``, ``audio-chunk``..., ``audio-stop``: 16-bit mono PCM at the
  voice's rate, sent sentence by sentence (the first sentence's audio leaves before the second
  is made), in chunks of ``samples_per_chunk`` samples.
- Streaming text (wyoming 1.7+): ``synthesize-start`` (voice), ``synthesize-chunk``... (text as
  it arrives, e.g. from an LLM), ``synthesize-stop``. Each sentence is spoken as soon as it is
  finished (text.sentences.take_sentences); one ``audio-start`` precedes the first audio, and
  ``audio-stop`` then ``synthesize-stopped`` end the stream. The ``synthesize`` with the whole
  text that Home Assistant also sends inside a stream (for older servers) is ignored.

Voice choice: ``voice.name`` is a served voice (else the default voice, or with only
``voice.language`` the first voice of that language); ``voice.speaker`` a speaker name or id
(else its default speaker: a fine-tuned voice's own, else the first). A bad request gets an
``error`` event (text and code) and the connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from functools import partial
from typing import Optional, Union
from urllib.parse import urlparse

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from voicetrain._version import __version__
from voicetrain.inference.synthesizer import UnknownSpeakerError
from voicetrain.serving.audio_formats import pcm16
from voicetrain.serving.voices import ServedVoice, VoiceSet
from voicetrain.text.sentences import split_sentences, take_sentences
from voicetrain.text.tokenizer import NoSpeakableTextError

log = logging.getLogger(__name__)

SAMPLES_PER_CHUNK = 1024
"""Samples per audio-chunk event (wyoming-piper's default)."""


class WyomingRequestError(ValueError):
    def __init__(self, text: str, code: str):
        super().__init__(text)
        self.code = code


def check_uri(uri: str) -> str:
    """``tcp://HOST:PORT`` or ``unix://PATH``; anything else is a ValueError naming the fix."""
    u = urlparse(uri)
    if u.scheme == "tcp":
        try:
            port = u.port
        except ValueError:
            port = None
        if not u.hostname or port is None:
            raise ValueError(f"--wyoming {uri!r}: give a host and port, e.g. tcp://127.0.0.1:10200")
        return uri
    if u.scheme == "unix" and u.path:
        return uri
    raise ValueError(f"--wyoming {uri!r}: use tcp://HOST:PORT (e.g. tcp://0.0.0.0:10200 for Home Assistant "
                     "on another machine) or unix://PATH")


def wyoming_language(espeak_language: Optional[str]) -> str:
    """espeak-ng's code (``en-us``) in the form Piper voices advertise (``en_US``)."""
    parts = (espeak_language or "en").replace("_", "-").split("-")
    lang = parts[0].lower()
    if len(parts) > 1 and len(parts[1]) == 2:
        return f"{lang}_{parts[1].upper()}"
    return lang


def voice_language(sv: ServedVoice) -> str:
    return wyoming_language(getattr(sv.synth.tokenizer.text_cfg, "language", None))


def wyoming_info(voices: VoiceSet) -> Info:
    """The ``info`` answer to ``describe``: every voice with its speakers."""
    attribution = Attribution(name="voicetrain", url="")
    tts_voices = []
    for key in voices.keys:
        sv = voices.served[key]
        v = sv.voice
        speakers = sv.speakers
        tts_voices.append(TtsVoice(
            name=key, attribution=attribution, installed=True, version=getattr(v, "version", None),
            description=f"{getattr(v, 'name', key)} ({len(speakers)} speaker(s), {sv.sample_rate} Hz)",
            languages=[voice_language(sv)],
            speakers=[TtsVoiceSpeaker(name=s) for s in speakers]))
    program = TtsProgram(name="voicetrain", attribution=attribution, installed=True, version=__version__,
                         description="voices trained with voicetrain", voices=tts_voices,
                         supports_synthesize_streaming=True)
    return Info(tts=[program])


def choose_voice(voices: VoiceSet, voice) -> tuple[ServedVoice, Union[str, int, None]]:
    """(served voice, speaker) for a wyoming SynthesizeVoice (or None)."""
    if voice is None:
        return voices.get(None), None
    if voice.name is not None:
        sv = voices.get(voice.name)
        if sv is None:
            raise WyomingRequestError(f"unknown voice {voice.name!r}; served: {', '.join(voices.keys)}",
                                      "unknown-voice")
    elif voice.language:
        want = wyoming_language(voice.language)
        sv = next((voices.served[k] for k in voices.keys if voice_language(voices.served[k]) == want),
                  next((voices.served[k] for k in voices.keys
                        if voice_language(voices.served[k]).split("_")[0] == want.split("_")[0]), voices.get(None)))
    else:
        sv = voices.get(None)
    speaker = voice.speaker
    if speaker is None or sv.synth.knows_speaker(speaker):
        return sv, speaker
    if speaker.isdigit() and int(speaker) < max(len(sv.speakers), 1):
        return sv, int(speaker)
    raise WyomingRequestError(f"unknown speaker {speaker!r}; this voice has: {', '.join(sv.speakers)}",
                              "unknown-speaker")


class VoicetrainEventHandler(AsyncEventHandler):
    """One client connection."""

    def __init__(self, info_event: Event, voices: VoiceSet, limiter: asyncio.Semaphore, samples_per_chunk: int,
                 *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.info_event = info_event
        self.voices = voices
        self.limiter = limiter
        self.samples_per_chunk = samples_per_chunk
        self.streaming = False
        self.stream_voice: Optional[tuple[ServedVoice, Union[str, int, None]]] = None
        self.text = ""  # streamed text not yet spoken (an unfinished sentence)
        self.started = False  # audio-start sent for the current answer

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info_event)
            return True
        try:
            if Synthesize.is_type(event.type):
                if not self.streaming:  # inside a stream it repeats the whole text for older servers
                    await self.synthesize(Synthesize.from_event(event))
            elif SynthesizeStart.is_type(event.type):
                self.stream_voice = choose_voice(self.voices, SynthesizeStart.from_event(event).voice)
                self.streaming, self.text, self.started = True, "", False
            elif SynthesizeChunk.is_type(event.type):
                if not self.streaming:
                    raise WyomingRequestError("synthesize-chunk outside a stream: send synthesize-start first",
                                              "no-stream")
                done, self.text = take_sentences(self.text + SynthesizeChunk.from_event(event).text)
                for sentence in done:
                    await self.speak(sentence)
            elif SynthesizeStop.is_type(event.type):
                if self.streaming:
                    for sentence in split_sentences(self.text):
                        await self.speak(sentence)
                    await self.audio_start(self.stream_voice[0].sample_rate)  # no audio at all: an empty answer
                    await self.write_event(AudioStop().event())
                self.streaming, self.text, self.started = False, "", False
                await self.write_event(SynthesizeStopped().event())
        except (WyomingRequestError, UnknownSpeakerError, NoSpeakableTextError) as e:
            code = getattr(e, "code", None) or ("unknown-speaker" if isinstance(e, UnknownSpeakerError)
                                                else "no-speakable-text")
            await self.write_event(Error(text=str(e), code=code).event())
        except Exception as e:  # a bug: say so, then close this connection
            log.exception("Wyoming request failed")
            await self.write_event(Error(text=f"{type(e).__name__}: {e}", code="internal-error").event())
            return False
        return True

    async def audio_start(self, sample_rate: int) -> None:
        if not self.started:
            await self.write_event(AudioStart(rate=sample_rate, width=2, channels=1).event())
            self.started = True

    async def send_audio(self, chunks: Iterator[np.ndarray], sample_rate: int) -> None:
        """Make each chunk in a worker thread and send it before the next one is made."""
        step = 2 * self.samples_per_chunk
        while True:
            async with self.limiter:
                chunk: Optional[np.ndarray] = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            await self.audio_start(sample_rate)
            data = pcm16(chunk)
            for i in range(0, len(data), step):
                await self.write_event(AudioChunk(audio=data[i: i + step], rate=sample_rate, width=2,
                                                  channels=1).event())

    async def synthesize(self, request: Synthesize) -> None:
        """A whole text: audio-start, the audio sentence by sentence, audio-stop."""
        sv, speaker = choose_voice(self.voices, request.voice)
        self.started = False
        text = " ".join(request.text.strip().splitlines())
        try:
            await self.send_audio(sv.stream(text, speaker, 1.0), sv.sample_rate)
        finally:
            if self.started:
                await self.write_event(AudioStop().event())
            self.started = False

    async def speak(self, sentence: str) -> None:
        """One finished sentence of a stream (after the first audio, with the pause between sentences)."""
        sv, speaker = self.stream_voice
        try:
            await self.send_audio(sv.stream(sentence, speaker, 1.0, continuing=self.started), sv.sample_rate)
        except NoSpeakableTextError:  # "..." between sentences: nothing to say, and no error
            pass


async def start_wyoming(voices: VoiceSet, uri: str, *, workers: int = 2, samples_per_chunk: int = SAMPLES_PER_CHUNK):
    """Start a Wyoming server at ``uri`` (tcp://HOST:PORT or unix://PATH) in the running loop; returns it
    (``await server.stop()`` ends it)."""
    server = AsyncServer.from_uri(check_uri(uri))
    handler = partial(VoicetrainEventHandler, wyoming_info(voices).event(), voices, asyncio.Semaphore(max(1, workers)),
                      samples_per_chunk)
    await server.start(handler)
    log.info("Wyoming server at %s (%d voice(s))", uri, len(voices))
    return server
