"""OpenAI-compatible speech: the official openai client against a real local server (uvicorn in a thread).

Every advertised format decodes to the voice's audio; every malformed request gets a 4xx in
OpenAI's error shape; wav/pcm stream, and the first audio arrives before the last sentence is made.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx2
import numpy as np
import openai  # pinned in the dev extra: a missing client is a failure, not a skip
import pytest
import soundfile as sf
import uvicorn

from voicetrain.inference.bundle import register_run
from voicetrain.inference.synthesizer import Synthesizer
from voicetrain.registry.store import ModelStore
from voicetrain.serving.audio_formats import FORMATS, opus_rate
from voicetrain.serving.http import create_app, load_voices

KEY = "s3cret-key"
TEXT = "The birch canoe slid on the smooth planks."
THREE = "Glue the sheet to the dark blue background. It's easy to tell the depth of a well. These days a chicken leg is a rare dish."
LIMIT = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_thread(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def voices(tmp_path_factory, tiny_run):
    st = ModelStore(tmp_path_factory.mktemp("store"))
    register_run(tiny_run, "demo", store=st)
    return load_voices(["demo"], st)


@pytest.fixture(scope="module")
def base_url(voices):
    with uvicorn_thread(create_app(voices, api_key=KEY, max_text_chars=LIMIT, workers=2)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(voices):
    audio, sr = voices["demo"].synthesize(TEXT)
    return audio, sr


def int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).round().astype(np.int16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_playable_audio_of_the_voice(client, voices, reference, fmt):
    ref, sr = reference
    speaker = voices["demo"].speakers[0]
    resp = client.audio.speech.create(model="demo", voice=speaker, input=TEXT, response_format=fmt)
    data = resp.content
    assert resp.response.status_code == 200
    if fmt == "pcm":
        got = np.frombuffer(data, dtype="<i2")
        assert int(resp.response.headers["x-sample-rate"]) == sr
        assert len(got) == len(ref) and np.abs(got.astype(int) - int16(ref)).max() <= 1
        return
    audio, got_sr = sf.read(io.BytesIO(data), dtype="float32")
    assert audio.ndim == 1 and np.isfinite(audio).all() and np.abs(audio).max() > 0.01
    if fmt in ("wav", "flac"):  # lossless: the library's samples, 16-bit
        assert got_sr == sr and len(audio) == len(ref) and np.abs(audio - ref).max() < 1e-3
    else:  # lossy: same duration (codec padding aside), and the same loudness envelope
        assert got_sr == (opus_rate(sr) if fmt == "opus" else sr)
        assert abs(len(audio) / got_sr - len(ref) / sr) < 0.1
        hop = got_sr // 50
        env = [np.sqrt(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1)) for x in
               (audio, np.interp(np.arange(len(audio)) * sr / got_sr, np.arange(len(ref)), ref))]
        n = min(len(env[0]), len(env[1]))
        assert np.corrcoef(env[0][:n], env[1][:n])[0, 1] > 0.8


def test_model_and_voice_mapping(client, voices, reference):
    ref, sr = reference

    def pcm(**kw) -> np.ndarray:
        return np.frombuffer(client.audio.speech.create(input=TEXT, response_format="pcm", **kw).content, "<i2")

    expected = int16(ref)
    for kw in (dict(model="demo", voice="default"), dict(model="demo@v1", voice="alloy"),
               dict(model="tts-1", voice="nova"), dict(model="gpt-4o-mini-tts", voice="demo"),
               dict(model="demo", voice="0"), dict(model="demo", voice={"id": voices["demo"].speakers[0]})):
        got = pcm(**kw)
        assert len(got) == len(expected) and np.abs(got.astype(int) - expected).max() <= 1, kw
    assert len(pcm(model="demo", voice="default", speed=2.0)) < 0.7 * len(expected)


def test_models_list_and_retrieve(client, voices):
    models = client.models.list()
    assert [m.id for m in models.data] == ["demo"]
    m = models.data[0]
    assert m.object == "model" and m.owned_by == "voicetrain" and m.created > 1_600_000_000
    assert m.model_extra["speakers"] == voices["demo"].speakers and m.model_extra["sample_rate"] == 22050
    assert client.models.retrieve("demo@v1").id == "demo@v1"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("nobody")
    assert e.value.body["code"] == "model_not_found"


def check_shape(err, status: int, param, says: str):
    assert err.status_code == status, err
    body = err.body
    assert set(body) == {"message", "type", "param", "code"}, body
    assert body["type"] == "invalid_request_error" and body["param"] == param and says in body["message"], body


@pytest.mark.parametrize("kw, status, param, says", [
    (dict(input=""), 400, "input", "input is empty"),
    (dict(input="  \n "), 400, "input", "input is empty"),
    (dict(input="?!... ;"), 400, "input", "no speakable content"),
    (dict(input="a" * (LIMIT + 1)), 400, "input", f"the limit is {LIMIT}"),
    (dict(input=42), 400, "input", "valid string"),
    (dict(model="nobody"), 404, "model", "does not exist"),
    (dict(model=7), 400, "model", "valid string"),
    (dict(voice="mallory"), 400, "voice", "unknown voice 'mallory'"),
    (dict(voice="7"), 400, "voice", "unknown voice '7'"),
    (dict(voice=["alloy"]), 400, "voice", "voice"),
    (dict(response_format="ogg"), 400, "response_format", "use one of wav, pcm, flac, mp3, opus"),
    (dict(response_format="aac"), 400, "response_format", "encodes AAC"),
    (dict(speed=10), 400, "speed", "less than or equal to 4"),
    (dict(speed=0.1), 400, "speed", "greater than or equal to 0.25"),
    (dict(speed="fast"), 400, "speed", "speed"),
    (dict(speed=True), 400, "speed", "speed"),
    (dict(stream_format="websocket"), 400, "stream_format", "'audio' or 'sse'"),
    (dict(extra_body={"pitch": 3}), 400, "pitch", "Unrecognized request argument supplied: pitch"),
])
def test_malformed_requests_get_4xx_in_openai_shape(client, kw, status, param, says):
    args = dict(model="demo", voice="default", input=TEXT, response_format="wav") | kw
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.speech.create(**args)
    check_shape(e.value, status, param, says)


def test_auth_body_and_routing_errors_have_openai_shape(base_url, client):
    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.audio.speech.create(model="demo", voice="default", input=TEXT)
    assert e.value.body["code"] == "invalid_api_key" and "API key" in e.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    h = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with httpx2.Client(base_url=base_url, headers=h, timeout=60) as http:
        for r, status in ((http.post("/v1/audio/speech", content=b"{not json"), 400),
                          (http.post("/v1/audio/speech", content=b'["hello"]'), 400),
                          (http.post("/v1/audio/speech"), 400),
                          (http.post("/v1/audio/speech", content=b"{" + b" " * 20000 + b"}"), 413),
                          (http.get("/v1/audio/speech"), 405)):
            assert r.status_code == status, r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
        assert http.get("/healthz").status_code == 200  # still healthy


def test_sse_stream_carries_the_same_audio(client, reference):
    ref, _ = reference
    resp = client.audio.speech.create(model="demo", voice="default", input=TEXT, response_format="pcm",
                                      stream_format="sse")
    assert resp.response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in resp.content.decode().splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"] and events[0]["type"] == "speech.audio.delta"
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    got = np.frombuffer(pcm, "<i2")
    assert len(got) == len(ref) and np.abs(got.astype(int) - int16(ref)).max() <= 1


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_first_audio_arrives_before_the_last_sentence_is_made(client, voices, monkeypatch, fmt):
    """Deterministic: synthesis of the last sentence waits until the client holds audio bytes."""
    last = THREE.split(". ")[-1]
    client_has_audio = threading.Event()
    order: list[str] = []
    original = Synthesizer.sentence_audio

    def hooked(self, sentence, sid, speed=1.0):
        if sentence == last:
            order.append("last sentence waits")
            order.append("last sentence starts" if client_has_audio.wait(60) else "timed out: nothing was streamed")
        return original(self, sentence, sid, speed)

    monkeypatch.setattr(Synthesizer, "sentence_audio", hooked)
    with client.audio.speech.with_streaming_response.create(model="demo", voice="default", input=THREE,
                                                            response_format=fmt) as resp:
        assert resp.headers.get("transfer-encoding") == "chunked"
        pieces = resp.iter_bytes()
        first = next(pieces)
        order.append("client has audio")
        client_has_audio.set()
        body = first + b"".join(pieces)
    assert order == ["last sentence waits", "client has audio", "last sentence starts"] or \
        order == ["client has audio", "last sentence waits", "last sentence starts"], order
    ref, sr = voices["demo"].synthesize(THREE)
    pcm = body[44:] if fmt == "wav" else body
    assert len(pcm) == 2 * len(ref)
    if fmt == "wav":
        audio, got_sr = sf.read(io.BytesIO(body), dtype="float32")  # the unknown-length header reads to the end
        assert got_sr == sr and len(audio) == len(ref)
