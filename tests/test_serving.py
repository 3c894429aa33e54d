"""HTTP server: happy path, every error path with the right 4xx, API key, concurrent requests."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("httpx2", reason="FastAPI's TestClient (Starlette 1.x) needs httpx2")

from fastapi.testclient import TestClient  # noqa: E402

from voicetrain.inference.bundle import register_run  # noqa: E402
from voicetrain.registry.store import ModelStore  # noqa: E402
from voicetrain.serving.http import create_app, load_voices  # noqa: E402

KEY = "s3cret-key"
TEXT = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def voices(tmp_path_factory, tiny_run):
    st = ModelStore(tmp_path_factory.mktemp("store"))
    register_run(tiny_run, "demo", store=st)
    return load_voices(["demo"], st)


@pytest.fixture(scope="module")
def client(voices):
    with TestClient(create_app(voices, api_key=KEY, max_text_chars=200, workers=2),
                    headers={"X-API-Key": KEY}) as c:
        yield c


def test_health_and_voices(client, voices):
    r = client.get("/healthz", headers={"X-API-Key": ""})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = client.get("/v1/voices")
    assert r.status_code == 200
    (v,) = r.json()["voices"]
    assert v["voice"] == "demo" and v["version"] == "v1" and v["speakers"] == voices["demo"].speakers
    assert v["sample_rate"] == 22050 and v["default"] is True


def test_synthesize_returns_the_same_audio_as_the_library(client, voices):
    r = client.post("/v1/synthesize", json={"text": TEXT, "voice": "demo", "speed": 1.0})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-voice"] == "demo"
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    ref, ref_sr = voices["demo"].synthesize(TEXT)
    assert sr == ref_sr and len(audio) == len(ref)
    assert abs(audio - ref).max() < 1e-3  # 16-bit PCM rounding
    speaker = voices["demo"].speakers[0]
    for body in ({"text": TEXT}, {"text": TEXT, "voice": "demo@v1", "speaker": speaker, "speed": 2.0},
                 {"text": TEXT, "speaker": 0, "speed": 0.25}):
        assert client.post("/v1/synthesize", json=body).status_code == 200, body
    fast = client.post("/v1/synthesize", json={"text": TEXT, "speed": 4.0})
    assert len(fast.content) < len(r.content)


@pytest.mark.parametrize("body, status, says", [
    ({"text": TEXT, "voice": "nobody"}, 404, "unknown voice 'nobody'"),
    ({"text": TEXT, "speaker": "mallory"}, 422, "unknown speaker 'mallory'"),
    ({"text": TEXT, "speaker": 7}, 422, "speaker id 7 out of range"),
    ({"text": ""}, 422, "text is empty"),
    ({"text": "   \n "}, 422, "text is empty"),
    ({"text": "?!... ;"}, 422, "no speakable content"),
    ({"text": "a" * 201}, 413, "the limit is 200"),
    ({"text": TEXT, "speed": 10}, 422, "speed"),
    ({"text": TEXT, "speed": 0.1}, 422, "speed"),
    ({"text": TEXT, "speed": "fast"}, 422, "speed"),
    ({"voice": "demo"}, 422, "text: Field required"),
    ({"text": 42}, 422, "text"),
    ({"text": TEXT, "colour": "blue"}, 422, "colour"),
    ([TEXT], 422, "invalid request"),
])
def test_bad_requests_get_a_clear_4xx(client, body, status, says):
    r = client.post("/v1/synthesize", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"], r.json()


def test_malformed_json_and_wrong_method(client):
    r = client.post("/v1/synthesize", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    assert client.post("/v1/synthesize").status_code == 422  # no body at all
    assert client.get("/v1/synthesize").status_code == 405
    assert client.get("/v1/nothing").status_code == 404


@pytest.mark.parametrize("headers", [{"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_api_key_required(client, headers):
    h = {"X-API-Key": "", **headers}
    if "Authorization" in headers:
        h.pop("X-API-Key")
        with TestClient(client.app) as bare:
            r = bare.post("/v1/synthesize", json={"text": TEXT}, headers=h)
    else:
        r = client.post("/v1/synthesize", json={"text": TEXT}, headers=h)
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert client.get("/v1/voices", headers={"X-API-Key": "wrong"}).status_code == 401


def test_bearer_token_and_no_key_server(client, voices):
    with TestClient(client.app) as bare:
        r = bare.get("/v1/voices", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
    with TestClient(create_app(voices)) as open_client:
        assert open_client.get("/v1/voices").status_code == 200


def test_concurrent_requests_are_safe(client):
    texts = [TEXT, "Glue the sheet to the dark blue background.", TEXT, "It's easy to tell the depth of a well."] * 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: client.post("/v1/synthesize", json={"text": t}), texts))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert results[0].content == results[2].content == results[4].content  # deterministic under concurrency
    assert client.get("/healthz").status_code == 200


def test_no_voices_is_an_error():
    with pytest.raises(ValueError, match="no voices"):
        create_app({})


@pytest.mark.parametrize("body, says", [
    ({"text": "hello \ud800 world"}, "lone surrogate"),
    ({"text": "\udfff"}, "lone surrogate"),
    ({"text": TEXT, "speaker": "9" * 5000}, "speaker"),
    ({"text": TEXT, "speaker": int("9" * 50)}, "speaker"),
    ({"text": TEXT, "speed": True}, "speed"),
])
def test_hostile_values_get_a_4xx_not_a_500(client, body, says):
    import json

    # json.dumps escapes a lone surrogate as \\ud800, as a hostile client would send it
    r = client.post("/v1/synthesize", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]


def test_body_size_is_limited_and_errors_are_capped(client):
    from voicetrain.serving.http import MAX_ERRORS_REPORTED, max_body_bytes

    limit = max_body_bytes(200)
    r = client.post("/v1/synthesize", content=b"{" + b" " * limit + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        yield b'{"text": "'
        for _ in range(limit // 1000 + 1):
            yield b"a" * 1000
        yield b'"}'

    r = client.post("/v1/synthesize", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/synthesize", json={"text": TEXT, **{f"k{i}": 1 for i in range(60)}})
    assert r.status_code == 422 and "more)" in r.json()["detail"] and len(r.json()["errors"]) == MAX_ERRORS_REPORTED
    small = client.post("/v1/synthesize", content=iter([b'{"text": "Hi there."}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200, small.text  # a chunked body under the limit still reaches the handler
    assert client.get("/healthz").status_code == 200


def test_streamed_wav_is_the_same_audio(client, voices):
    text = TEXT + " Glue the sheet to the dark blue background."
    r = client.post("/v1/synthesize", json={"text": text, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav", r.text
    assert r.content[4:8] == b"\xff\xff\xff\xff"  # a streamed header: length unknown
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    ref, ref_sr = voices["demo"].synthesize(text)
    assert sr == ref_sr and len(audio) == len(ref) and abs(audio - ref).max() < 1e-3
    for body, says in (({"text": "?!... ;", "stream": True}, "no speakable content"),
                       ({"text": TEXT, "speaker": "mallory", "stream": True}, "unknown speaker"),
                       ({"text": TEXT, "stream": "yes"}, "stream")):
        r = client.post("/v1/synthesize", json=body)
        assert r.status_code == 422 and says in r.json()["detail"], r.text
