"""voicetrain studio end to end in a real browser: Debian's chromium driven by playwright, its fake microphone
fed espeak-ng wav files as the speaker's voice.

`voicetrain studio` runs as a subprocess (the CLI as a user starts it). The browser records 12 takes of a
prompt file loaded through the page, one of them saying another sentence and one clipped; both are flagged
with their reasons; the mismatched one is re-recorded; a tiny run is estimated and trained; its loss curve
and a sample appear; a checkpoint speaks typed text; the voice is registered. Chromium re-reads the fake
capture file each time a microphone stream opens (the page opens one per take), so the test swaps the file
between takes. Screenshots of each screen go to $STUDIO_SCREENSHOTS (docs/studio/ for README), else a temp folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CHROMIUM = "/usr/bin/chromium"
pytest.importorskip("playwright.sync_api")
pytest.importorskip("faster_whisper")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; the Makefile's .apt-installed does it)",
                allow_module_level=True)
from playwright.sync_api import expect, sync_playwright  # noqa: E402

# README's screenshots: `STUDIO_SCREENSHOTS=docs/studio pytest tests/studio/test_browser.py` refreshes them; a plain
# test run keeps its screenshots out of the checkout (a fresh temp folder per run)
SHOTS_ENV = "STUDIO_SCREENSHOTS"
SENTENCES = [
    "The sun is warm and the sky is blue.",
    "My brother reads a book every night.",
    "Please open the window in the kitchen.",
    "We walked to the market after lunch.",
    "The little dog sleeps under the table.",
    "She drinks hot tea on cold mornings.",
    "Our train leaves at seven in the evening.",
    "He painted the old fence bright green.",
    "The children played football in the park.",
    "I found my keys beside the front door.",
    "The river runs fast after heavy rain.",
    "They planted tomatoes in the garden today.",
]
OTHER = "Seven large horses crossed the frozen bridge at dawn."
WPM = 190
"""espeak-ng's rate: the takes are recorded in real time, so shorter speech is a shorter test. Measured on these 13
sentences with Whisper tiny.en (the take check): CER against their own prompt at most 0.15 at 190 wpm (0.19 at
165, 0.37 at 210), 1.06 for the mismatched one; the mismatch line is 0.6 (checks.MISMATCH_CER)."""
LEAD_S, TAIL_S = 0.4, 1.2
"""Silence before and after the speech in each fed file: the take starts a little into the file (the stream opens
before capture begins), so some lead is needed; the tail is more than a take keeps (TAKE_TAIL_S)."""
TAKE_TAIL_S = 0.3
"""Silence kept after the speech: enough that QC does not call the take cut off (CUT_OFF_S plus trimming's pad)."""
MISMATCH, CLIPPED = 3, 7  # which prompts get the wrong sentence and the clipped take
TINY = ["train.batch_size=4", "train.val_every_steps=8", "train.checkpoint_every_steps=8",
        "train.sample_every_steps=8", "train.log_every_steps=1", "train.n_sample_sentences=1", "train.threads=1",
        "train.quality_sentences=0"]


def feed_file(text: str, out: Path, clip: bool = False) -> float:
    """espeak-ng speaking ``text`` between LEAD_S and TAIL_S of silence; returns the speech's seconds."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(WPM), "-w", str(raw), text], check=True)
    audio, sr = sf.read(raw, dtype="float32")
    if clip:  # a take recorded with the gain far too high
        audio = np.clip(audio * 12.0, -1.0, 1.0)
    silence = lambda s: np.zeros(int(s * sr), dtype=np.float32)  # noqa: E731
    sf.write(out, np.concatenate([silence(LEAD_S), audio, silence(TAIL_S)]), sr, subtype="PCM_16")
    return len(audio) / sr


def hold_until_spoken(page, speech_s: float) -> None:
    """Keep recording until the take holds the fed file's speech and TAKE_TAIL_S after it, counted in captured
    audio (the page's data-captured), not wall time: on a loaded machine the capture can lag the clock."""
    want = LEAD_S + speech_s + TAKE_TAIL_S
    page.wait_for_function(f"Number(document.body.dataset.captured) >= {want:.2f}", polling=50, timeout=30_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def studio(tmp_path):
    port = free_port()
    project = tmp_path / "project"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    log = open(tmp_path / "studio.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "voicetrain.cli", "studio", "--project", str(project), "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/state", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("the studio did not start: " + (tmp_path / "studio.log").read_text())
                time.sleep(0.3)
        yield url, project
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_record_check_train_listen_keep_in_chromium(studio, tmp_path):
    SHOTS = Path(os.environ.get(SHOTS_ENV) or tmp_path / "shots")
    SHOTS.mkdir(parents=True, exist_ok=True)
    url, project = studio
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    seconds = {}
    for i, s in enumerate(SENTENCES):
        seconds[i] = feed_file(s, feeds / f"{i}.wav", clip=i == CLIPPED)
    seconds["other"] = feed_file(OTHER, feeds / "other.wav")
    mic = tmp_path / "mic.wav"
    shutil.copy(feeds / "0.wav", mic)
    prompt_file = tmp_path / "my_prompts.txt"
    prompt_file.write_text("\n".join(SENTENCES) + "\n")
    SHOTS.mkdir(parents=True, exist_ok=True)

    def speak_into_mic(name) -> float:
        tmp = mic.with_suffix(".next.wav")
        shutil.copy(feeds / f"{name}.wav", tmp)
        os.replace(tmp, mic)  # whole file at once: chromium reads it when the next stream opens
        return seconds[name]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        page.set_input_files("#prompt-file", str(prompt_file))
        expect(page.locator("#prompt-text")).to_have_text(SENTENCES[0])
        expect(page.locator("#prompt-pos")).to_have_text("1 / 12")

        # ---- record 12 takes with the keyboard: R records, S stops (the page moves to the next prompt)
        for i in range(12):
            expect(page.locator("#prompt-text")).to_have_text(SENTENCES[i])
            secs = speak_into_mic("other" if i == MISMATCH else i)
            page.keyboard.press("r")
            expect(page.locator("body")).to_have_attribute("data-recording", "true")
            hold_until_spoken(page, secs)
            page.keyboard.press("s")
            expect(page.locator("body")).to_have_attribute("data-recording", "false")
        rows = page.locator("#takes tbody tr")
        expect(rows).to_have_count(12, timeout=30_000)
        expect(page.locator('#takes tr[data-status="checking"]')).to_have_count(0, timeout=60_000)
        mismatch = page.locator('#takes tr[data-take="prompt_0004"]')
        clipped = page.locator('#takes tr[data-take="prompt_0008"]')
        expect(mismatch).to_have_attribute("data-status", "bad")
        expect(mismatch.locator("td.why")).to_contain_text("prompt_mismatch")
        expect(mismatch.locator("td.why")).to_contain_text("does not match the prompt")
        expect(clipped).to_have_attribute("data-status", "bad")
        expect(clipped.locator("td.why")).to_contain_text("clipping")
        expect(clipped.locator("td.why")).to_contain_text("lower input gain")
        statuses = [rows.nth(k).get_attribute("data-status") for k in range(12)]
        assert statuses.count("bad") == 2, [(k, s, rows.nth(k).locator("td.why").inner_text()) for k, s in enumerate(statuses)]
        assert (project / "takes" / "prompt_0001.wav").is_file()
        assert (project / "takes" / "prompt_0001.txt").read_text().strip() == SENTENCES[0]

        # ---- re-record the mismatched one, this time saying its prompt
        secs = speak_into_mic(MISMATCH)
        mismatch.locator("button.rerecord").click()
        expect(page.locator("body")).to_have_attribute("data-recording", "true")
        hold_until_spoken(page, secs)
        page.keyboard.press("Space")
        expect(page.locator('#takes tr[data-take="prompt_0004"]')).to_have_attribute("data-status", "good", timeout=60_000)
        # a reload loses nothing: the takes, their verdicts and the place in the prompt list come back
        at = page.locator("#prompt-pos").inner_text()
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#takes tbody tr")).to_have_count(12)
        expect(page.locator('#takes tr[data-status="bad"]')).to_have_count(1)
        expect(page.locator("#prompt-pos")).to_have_text(at)
        page.locator('#takes tr[data-take="prompt_0008"]').scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "record.png"), full_page=True)

        # ---- is it enough?
        page.click('#tabs button[data-screen="enough"]')
        expect(page.locator("#enough-figures")).to_contain_text("usable takes")
        expect(page.locator("#enough-figures")).to_contain_text("phoneme coverage")
        # what a run will reach: the shipped curve's fine-tune and from-scratch rows, its source named
        expect(page.locator("#enough-reach tbody tr")).to_have_count(2)
        expect(page.locator('#enough-reach tr[data-run="finetune"]')).to_contain_text("fine-tune the shipped base")
        expect(page.locator("#enough-source")).to_contain_text("finetune_curve.json")
        page.screenshot(path=str(SHOTS / "enough.png"), full_page=True)

        # ---- train: the estimate first, then a tiny run
        page.click('#tabs button[data-screen="train"]')
        page.select_option("#preset", "tiny")
        page.fill("#max-minutes", "")
        page.fill("#max-steps", "16")  # checkpoints and samples at steps 8 and 16: two to A/B
        page.fill("#settings", "\n".join(TINY))
        expect(page.locator("#btn-start")).to_be_disabled()
        page.click("#btn-estimate")
        expect(page.locator("#estimate")).to_contain_text("ETA", timeout=120_000)
        expect(page.locator("#estimate")).to_contain_text("peak memory")
        page.click("#btn-start")
        expect(page.locator("#samples audio.sample").first).to_be_attached(timeout=120_000)
        expect(page.locator("#loss-chart")).to_have_attribute("data-points", re.compile(r"[1-9]\d*"))
        expect(page.locator("body")).to_have_attribute("data-run-status", "finished", timeout=120_000)
        page.screenshot(path=str(SHOTS / "train.png"), full_page=True)

        # ---- listen: the marked checkpoint speaks typed text; A/B two checkpoints
        page.click('#tabs button[data-screen="listen"]')
        # the first look at checkpoints loads torch into the studio (its idle memory does not hold it)
        expect(page.locator("#ckpt-list li.selected")).to_have_count(1, timeout=60_000)
        page.fill("#listen-text", "The red ball bounced over the wall.")
        page.click("#btn-speak")
        audio = page.locator("#speak-out audio.spoken")
        expect(audio).to_be_attached(timeout=60_000)
        played = page.evaluate("""async () => { const a = document.querySelector('#speak-out audio.spoken');
            await a.play(); await new Promise(r => setTimeout(r, 400)); return [a.duration, a.currentTime]; }""")
        assert played[0] > 0.3 and played[1] > 0, played
        page.click("#btn-ab")
        expect(page.locator("#ab-out audio.spoken")).to_have_count(2, timeout=60_000)
        page.screenshot(path=str(SHOTS / "listen.png"), full_page=True)

        # ---- keep: register with a note
        page.click('#tabs button[data-screen="keep"]')
        page.fill("#keep-name", "myvoice")
        page.fill("#keep-note", "recorded in the studio test")
        page.click("#btn-register")
        voice = page.locator('#voices .voice[data-voice="myvoice@v1"]')
        expect(voice).to_contain_text("recorded in the studio test", timeout=60_000)
        expect(voice.locator('.snippet[data-kind="curl"] pre')).to_contain_text("curl -s -X POST")
        expect(voice.locator('.snippet[data-kind="home_assistant"] pre')).to_contain_text(
            "voicetrain serve myvoice@v1")
        expect(voice.locator('.snippet[data-kind="home_assistant"] pre')).to_contain_text("--wyoming tcp://0.0.0.0:10200")
        expect(voice.locator('a[href$="/piper.zip"]')).to_have_text("Download for Piper")
        expect(voice.locator('.snippet[data-kind="piper"] pre')).to_contain_text("/share/piper")
        page.screenshot(path=str(SHOTS / "keep.png"), full_page=True)
        browser.close()
    assert (project / "models" / "myvoice" / "v1" / "voice.json").is_file()

