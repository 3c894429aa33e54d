"""The Keep screen's ready-to-copy snippets for a registered voice: curl against `voicetrain serve`, Home Assistant
over the Wyoming protocol, and the Piper export in Home Assistant's Piper add-on.

Where the Home Assistant steps come from (checked against their sources, not guessed):
- Home Assistant's Wyoming Protocol integration is added with a host and a port (its config flow asks exactly
  those two: homeassistant/components/wyoming/config_flow.py); its TTS entity, named after the program
  (``voicetrain``), offers the voices the server's ``describe`` lists, shown by their description (which starts
  with the voice's name) and asked for by id, the name they are served under (NAME@VERSION here): its tts.py.
- Piper's add-on runs ``wyoming_piper --data-dir /data --data-dir /share/piper`` (home-assistant/addons,
  piper/rootfs/.../piper/run), and wyoming-piper advertises every NAME.onnx + NAME.onnx.json pair found in a data
  folder as a custom voice called NAME (its tests/test_custom_voices.py). The Samba share add-on shows /share as
  the folder "share".
"""

from __future__ import annotations

from pathlib import Path

HTTP_PORT = 8000
WYOMING_PORT = 10200
"""The port Home Assistant's Wyoming voices use by convention (the Piper add-on's)."""


def curl(ref: str, store: Path) -> str:
    return (f"voicetrain serve {ref} --store {store} --port {HTTP_PORT} &\n"
            f"curl -s -X POST http://127.0.0.1:{HTTP_PORT}/v1/synthesize -H 'Content-Type: application/json' \\\n"
            f"  -d '{{\"text\": \"Hello from my own voice.\", \"voice\": \"{ref}\"}}' -o hello.wav")


def home_assistant(name: str, version: str, store: Path) -> str:
    ref = f"{name}@{version}"
    return (f"# 1. Serve {ref} over the Wyoming protocol (it has no API key: only on a network you trust)\n"
            f"voicetrain serve {ref} --store {store} --no-http --wyoming tcp://0.0.0.0:{WYOMING_PORT}\n"
            "# 2. Home Assistant: Settings > Devices & services > Add integration > Wyoming Protocol\n"
            f"#    Host: this computer's address on your network    Port: {WYOMING_PORT}\n"
            "# 3. Settings > Voice assistants > your assistant > Text-to-speech: voicetrain,\n"
            f"#    Voice: {name} (id {ref})")


def piper_addon(name: str, version: str) -> str:
    folder = f"{name}-{version}-piper"
    return (f"# The Piper download ({folder}.zip) holds {name}.onnx + {name}.onnx.json, a Piper voice.\n"
            f"unzip {folder}.zip\n"
            "# Home Assistant's Piper add-on also reads voices from /share/piper: copy both files there\n"
            "# (the Samba share add-on shows /share as the folder \"share\"; create piper/ in it), e.g.\n"
            f"cp {folder}/{name}.onnx {folder}/{name}.onnx.json /share/piper/\n"
            "# then restart the Piper add-on and reload its Wyoming Protocol entry; the voice is listed as\n"
            f"#   {name}  (Settings > Voice assistants > your assistant > Text-to-speech: piper)\n"
            "# Without Home Assistant's add-on, wyoming-piper serves the folder itself:\n"
            f"python3 -m wyoming_piper --voice {name} --data-dir {folder} --download-dir {folder} "
            f"--uri tcp://0.0.0.0:{WYOMING_PORT}")


def snippets(name: str, version: str, store: Path, *, piper: bool) -> dict[str, str]:
    """{kind: text} for the voice NAME@VERSION; ``piper``: this install exports Piper voices."""
    ref = f"{name}@{version}"
    out = {"curl": curl(ref, store), "home_assistant": home_assistant(name, version, store)}
    if piper:
        out["piper"] = piper_addon(name, version)
    return out
