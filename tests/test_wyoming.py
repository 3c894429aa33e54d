"""Wyoming: the wyoming package's own client against `voicetrain serve --wyoming` (serve(), in a thread).

describe -> info with every voice and speaker; synthesize -> audio-start / chunks / audio-stop that
make a playable wav of the voice's audio; streaming text (synthesize-start / -chunk / -stop) gives
the same audio; bad requests get an error event and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
import wave

import numpy as np
import pytest
import soundfile as sf
import torch
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import (Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop,
                         SynthesizeVoice)

from voicetrain.cli import main
from voicetrain.inference.bundle import load_voice, register_run
from voicetrain.inference.synthesizer import Synthesizer
from voicetrain.registry.store import ModelStore
from voicetrain.serving.http import serve

TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
SENTENCES = ["Glue the sheet to the dark blue background.", "It's easy to tell the depth of a well.",
             "These days a chicken leg is a rare dish."]
THREE = " ".join(SENTENCES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_run):
    st = ModelStore(tmp_path_factory.mktemp("store"))
    register_run(tiny_run, "demo", store=st)
    register_run(tiny_run, "other", store=st)
    return st


@pytest.fixture(scope="module")
def port(store):
    """`voicetrain serve demo other --wyoming tcp://127.0.0.1:PORT --no-http`, in this process."""
    threads = torch.get_num_threads()
    port = free_port()
    stop = threading.Event()
    failed: list[BaseException] = []

    def run():
        try:
            serve(["demo", "other"], store=store, wyoming=f"tcp://127.0.0.1:{port}", http=False, stop=stop)
        except BaseException as e:  # shown by the wait below
            failed.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while True:
        assert not failed, failed
        assert time.monotonic() < deadline, "the Wyoming server did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port
    stop.set()
    thread.join(30)
    torch.set_num_threads(threads)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def voice(store):
    return load_voice("demo", store=store)


async def exchange(port: int, *events, until=("audio-stop", "error")) -> list:
    """Send ``events`` on one connection; read until an event of a type in ``until``."""
    got = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for e in events:
            await client.write_event(e.event())
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout=120)
            assert event is not None, f"server closed the connection after {[e.type for e in got]}"
            got.append(event)
            if event.type in until:
                return got


def as_wav(events) -> tuple[bytes, AudioStart]:
    start = AudioStart.from_event(next(e for e in events if AudioStart.is_type(e.type)))
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(start.channels)
        w.setsampwidth(start.width)
        w.setframerate(start.rate)
        w.writeframes(pcm)
    return buf.getvalue(), start


def int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).round().astype(np.int16)


def test_describe_lists_every_voice_and_speaker(port, voice):
    (event,) = asyncio.run(exchange(port, Describe(), until=("info",)))
    info = Info.from_event(event)
    (program,) = info.tts
    assert program.name == "voicetrain" and program.supports_synthesize_streaming and program.installed
    assert [v.name for v in program.voices] == ["demo", "other"]
    for v in program.voices:
        assert [s.name for s in v.speakers] == voice.speakers and v.languages == ["en_US"] and v.installed


@pytest.mark.parametrize("voice_arg", [None, SynthesizeVoice(name="demo"), SynthesizeVoice(name="other", speaker="0"),
                                       SynthesizeVoice(language="en_US")])
def test_synthesize_gives_a_playable_wav_of_the_voice(port, voice, voice_arg):
    events = asyncio.run(exchange(port, Synthesize(text=TEXT, voice=voice_arg)))
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop" and set(types[1:-1]) == {"audio-chunk"}
    assert len(types) > 3  # sentence by sentence, in chunks of 1024 samples
    wav, start = as_wav(events)
    audio, sr = sf.read(io.BytesIO(wav), dtype="int16")
    ref, ref_sr = voice.synthesize(TEXT)
    assert (start.rate, start.width, start.channels) == (ref_sr, 2, 1) and sr == ref_sr
    assert len(audio) == len(ref) and np.abs(audio.astype(int) - int16(ref)).max() <= 1


def test_streaming_text_gives_the_same_audio(port, voice):
    speaker = voice.speakers[0]
    pieces = ["The birch ca", "noe slid on the smooth planks.", " Glue the", " sheet to the dark", " blue background."]
    events = asyncio.run(exchange(
        port, SynthesizeStart(voice=SynthesizeVoice(name="demo", speaker=speaker)),
        *[SynthesizeChunk(text=p) for p in pieces],
        Synthesize(text="".join(pieces), voice=SynthesizeVoice(name="demo")),  # Home Assistant's copy: ignored
        SynthesizeStop(), until=("synthesize-stopped", "error")))
    types = [e.type for e in events]
    assert types.count("audio-start") == 1 and types[0] == "audio-start"
    assert types[-2:] == ["audio-stop", "synthesize-stopped"] and types.count("audio-stop") == 1
    wav, _ = as_wav(events)
    audio, _ = sf.read(io.BytesIO(wav), dtype="int16")
    ref, _ = voice.synthesize(TEXT, speaker=speaker)
    assert len(audio) == len(ref) and np.abs(audio.astype(int) - int16(ref)).max() <= 1


def test_an_empty_stream_ends_cleanly(port):
    events = asyncio.run(exchange(port, SynthesizeStart(), SynthesizeChunk(text=" ... "), SynthesizeStop(),
                                  until=("synthesize-stopped", "error")))
    assert [e.type for e in events] == ["audio-start", "audio-stop", "synthesize-stopped"]


@pytest.mark.parametrize("request_, code, says", [
    (Synthesize(text=TEXT, voice=SynthesizeVoice(name="nobody")), "unknown-voice", "unknown voice 'nobody'"),
    (Synthesize(text=TEXT, voice=SynthesizeVoice(name="demo", speaker="mallory")), "unknown-speaker", "mallory"),
    (Synthesize(text="?!... ;"), "no-speakable-text", "no speakable content"),
    (SynthesizeChunk(text="Hello."), "no-stream", "synthesize-start first"),
])
def test_bad_requests_get_an_error_event_and_the_connection_stays_usable(port, request_, code, says):
    events = asyncio.run(exchange(port, request_, Describe(), until=("info",)))
    errors = [Error.from_event(e) for e in events if Error.is_type(e.type)]
    assert len(errors) == 1 and errors[0].code == code and says in errors[0].text, events
    assert events[-1].type == "info"
    assert not any(e.type.startswith("audio") for e in events)


def test_first_audio_leaves_before_the_last_sentence_is_made(port, monkeypatch):
    """Deterministic: synthesis of the last sentence waits until the client holds an audio chunk."""
    last = SENTENCES[-1]
    client_has_audio = threading.Event()
    order: list[str] = []
    original = Synthesizer.sentence_audio

    def hooked(self, sentence, sid, speed=1.0):
        if sentence == last:
            order.append("last sentence starts" if client_has_audio.wait(60) else "timed out: nothing was streamed")
        return original(self, sentence, sid, speed)

    monkeypatch.setattr(Synthesizer, "sentence_audio", hooked)

    async def talk():
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text=THREE).event())
            while (event := await asyncio.wait_for(client.read_event(), timeout=120)).type != "audio-stop":
                if AudioChunk.is_type(event.type) and not client_has_audio.is_set():
                    order.append("client has audio")
                    client_has_audio.set()

    asyncio.run(talk())
    assert order == ["client has audio", "last sentence starts"], order
    client_has_audio.clear()  # the streaming-text path as well
    order.clear()

    async def talk_stream():
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(SynthesizeStart().event())
            for sentence in SENTENCES:
                await client.write_event(SynthesizeChunk(text=sentence + " ").event())
            await client.write_event(SynthesizeStop().event())
            while (event := await asyncio.wait_for(client.read_event(), timeout=120)).type != "synthesize-stopped":
                if AudioChunk.is_type(event.type) and not client_has_audio.is_set():
                    order.append("client has audio")
                    client_has_audio.set()

    asyncio.run(talk_stream())
    assert order == ["client has audio", "last sentence starts"], order


def test_cli_refuses_a_bad_wyoming_uri_before_loading(tmp_path, capsys):
    for argv, says in ((["serve", "--store", str(tmp_path), "--wyoming", "http://127.0.0.1:10200"], "tcp://HOST:PORT"),
                       (["serve", "--store", str(tmp_path), "--wyoming", "tcp://127.0.0.1"], "give a host and port"),
                       (["serve", "--store", str(tmp_path), "--no-http"], "--no-http needs --wyoming")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code != 0
        assert says in capsys.readouterr().err, argv


def test_http_and_wyoming_together_share_one_process(store):
    """`voicetrain serve demo --port P --wyoming tcp://...`: both answer, and stop ends both."""
    import urllib.request

    threads = torch.get_num_threads()
    http_port, wy_port = free_port(), free_port()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(["demo"],), daemon=True, kwargs=dict(
        store=store, port=http_port, wyoming=f"tcp://127.0.0.1:{wy_port}", stop=stop, log_level="warning"))
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert thread.is_alive() and time.monotonic() < deadline, "the servers did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=5) as r:
                    models = r.read()
                break
            except OSError:
                time.sleep(0.2)
        assert b'"demo"' in models
        (event,) = asyncio.run(exchange(wy_port, Describe(), until=("info",)))
        assert [v.name for v in Info.from_event(event).tts[0].voices] == ["demo"]
    finally:
        stop.set()
        thread.join(30)
        torch.set_num_threads(threads)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", wy_port), timeout=1).close()
