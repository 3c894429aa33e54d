"""Export a voice as a Piper voice: NAME.onnx + NAME.onnx.json that the real ``piper-tts`` speaks unchanged.

Piper (piper-tts 1.8.0, ``piper/voice.py``) phonemizes each sentence with its bundled
espeak-ng, decomposes the phonemes into NFD code points, and runs one ONNX graph:

    input (int64 [1, N]) = ^ _ p1 _ p2 _ ... pk _ $   (ids from the JSON's phoneme_id_map)
    input_lengths (int64 [1]), scales (float32 [3]: noise, length, noise_w), sid (int64 [1], multi-speaker only)
    -> output (float32 [1, 1, samples])

The graph written here is the whole voice: a front end that drops Piper's pad, BOS and
EOS ids, FastSpeech 2 (``export.ExportableFastSpeech2``: tokens -> mel, speed =
1 / length scale), the mel de-normalization, and a Vocos vocoder whose inverse STFT
is spelled with plain ops (:class:`OnnxISTFT`: the inverse real DFT as two matmuls,
overlap-add as shifted sums), because ONNX has no ``istft`` operator. ``--vocoder griffin-lim``
unrolls Griffin-Lim's 32 iterations into the graph instead (:class:`OnnxGriffinLim`).

The phoneme map keeps voicetrain's own ids: voicetrain's symbol 0 is already ``_``
(Piper's pad), every other symbol ``s`` of the voice maps to ``[its voicetrain id]``,
and ``^`` / ``$`` get the two ids after the table. The graph keeps only ids in
``1 .. len(symbols) - 1`` (and the first ``input_lengths`` positions), so Piper's
``^ _ p _ p _ $`` reaches FastSpeech 2 as exactly the ids voicetrain's tokenizer makes
for the same phonemes (tests/test_piper_export.py checks both the symbols and the audio).
A voicetrain symbol that NFD splits into several code points is re-joined by Piper's
``vowel_clusters``. For ``--phonemizer chars`` voices the type is ``text`` and upper-case
letters map to the lower-case ids (voicetrain lower-cases text).

Where Piper's symbols cannot be voicetrain's. Of the 720 Harvard sentences, 646 reach the model
as the same symbols in Piper and in voicetrain (Debian's espeak-ng 1.51 through phonemizer);
73 differ by the espeak-ng version (Piper's bundled one says ``ɔːɹ`` in "four", "store", where
1.51 says ``oːɹ``, and adds a ``ʲ``), one by a hyphen ("hot-cross": two words in phonemizer).
Beyond that:
  * punctuation that phonemizer keeps and espeak's clause reader drops (quotes,
    parentheses, ``...``) never reaches the Piper voice; a voice trained with it still speaks;
  * voicetrain splits sentences at ``. ! ? ; :`` and Piper only at ``. ! ?``, so a
    ``;`` or ``:`` is one utterance in Piper and two in voicetrain;
  * voicetrain's text normalizer (numbers, currency, abbreviations such as ``Mr.``)
    does not run in Piper: espeak-ng reads those itself (``Mr.`` ends a sentence there);
  * a phoneme the voice never saw is skipped with a warning by both (Piper logs
    "Missing phoneme from id map").
FastSpeech 2 is deterministic, so the noise scales are accepted and ignored.

Speakers: Piper (and Home Assistant's Piper add-on) speak sid 0 unless told otherwise, so sid 0 is the voice's
default speaker (a voice fine-tuned from the shipped base: its own speaker, not the base's first) and the others
follow; ``speaker_id_map`` names every one.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voicetrain.fileio import atomic_path, atomic_write_json
from voicetrain.inference.bundle import BundleParts
from voicetrain.inference.export import ExportableFastSpeech2, ExportError, load_source

PIPER_PAD, PIPER_BOS, PIPER_EOS = "_", "^", "$"
PIPER_INPUTS = ("input", "input_lengths", "scales")
PIPER_FORMAT_VERSION = "1.0.0"
"""``piper_version`` of the written config: the voice-file format of every published Piper voice."""
PIPER_TESTED = "piper-tts 1.8.0"
AUTO = "auto"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class OnnxISTFT(nn.Module):
    """``torch.istft(spec, n_fft, hop, win_length, window, center=True, length=T * hop)`` from real and
    imaginary parts, with ops any ONNX runtime runs: the inverse real DFT (times the window) as two matmuls
    with fixed (F, n_fft) matrices, and overlap-add as ``n_fft // hop`` shifted, padded sums.

    forward(real (B, F, T), imag (B, F, T)) -> wav (B, T * hop), F = n_fft // 2 + 1
    """

    def __init__(self, n_fft: int, hop_length: int, window: torch.Tensor):
        super().__init__()
        if n_fft % hop_length:
            raise ExportError(f"the in-graph inverse STFT needs n_fft divisible by hop_length "
                              f"(n_fft {n_fft}, hop {hop_length})")
        if window.numel() < n_fft:  # torch.istft centres a shorter window inside n_fft
            left = (n_fft - window.numel()) // 2
            window = torch.nn.functional.pad(window, (left, n_fft - window.numel() - left))
        self.n_fft, self.hop, self.overlap = n_fft, hop_length, n_fft // hop_length
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
        # irfft: x[n] = (1/N) sum_k c_k (Re_k cos - Im_k sin), c_k = 1 for DC and Nyquist, else 2 (Hermitian half)
        c = torch.full_like(k, 2.0)
        c[0] = 1.0
        if n_fft % 2 == 0:
            c[-1] = 1.0
        w = window.double()[None, :]
        # persistent: the TorchScript exporter stores state_dict tensors once as initializers, but inlines a
        # non-persistent buffer as a constant at every use (Griffin-Lim's 32 rounds made a 268 MB file)
        self.register_buffer("cos_w", (c[:, None] * torch.cos(angle) / n_fft * w).float())
        self.register_buffer("sin_w", (-c[:, None] * torch.sin(angle) / n_fft * w).float())
        self.register_buffer("win_sq", (window.double() ** 2).float())

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, n_fft) frames hop apart -> (B, (T + overlap - 1) * hop) summed signal."""
        B, T = frames.shape[0], frames.shape[1]
        parts = frames.reshape(B, T, self.overlap, self.hop)
        out = None
        for i in range(self.overlap):
            # part i of frame t lands in output block t + i
            piece = torch.nn.functional.pad(parts[:, :, i, :], (0, 0, i, self.overlap - 1 - i))
            out = piece if out is None else out + piece
        return out.reshape(B, -1)

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        frames = real.transpose(1, 2) @ self.cos_w + imag.transpose(1, 2) @ self.sin_w  # (B, T, n_fft)
        T = frames.shape[1]
        wav = self._overlap_add(frames)
        env = self._overlap_add(torch.ones_like(frames[:, :, :1]) * self.win_sq)
        wav = wav / torch.clamp(env, min=1e-11)
        start = self.n_fft // 2  # center=True: frame t is centred on sample t * hop
        return wav[:, start:start + T * self.hop]


class OnnxVocos(nn.Module):
    """A trained :class:`~voicetrain.vocoders.vocos.Vocos` with :class:`OnnxISTFT`: log-mel (B, M, T) -> wav (B, T * hop)."""

    def __init__(self, vocos: nn.Module):
        super().__init__()
        self.vocos = vocos
        a = vocos.audio
        self.istft = OnnxISTFT(a.n_fft, a.hop_length, torch.hann_window(a.win_length))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        log_mag, phase = self.vocos.head_output(mel).float().chunk(2, dim=1)
        mag = torch.exp(torch.clamp(log_mag, max=self.vocos.cfg.max_log_magnitude))
        return self.istft(mag * torch.cos(phase), mag * torch.sin(phase))


class OnnxGriffinLim(nn.Module):
    """:class:`~voicetrain.vocoders.griffin_lim.GriffinLim` unrolled into the graph: ``n_iter`` rounds of an
    inverse STFT (:class:`OnnxISTFT`) and an STFT spelled the same way (reflect pad, frames as shifted hop
    blocks, the real DFT as two matmuls). The initial phases are torch's seeded stream, stored for up to
    ``max_frames`` frames, so the graph makes the same audio as the torch Griffin-Lim. Each round costs
    four (frames x n_fft x F) matmuls, where torch uses FFTs: slower than Vocos, and it sounds worse.

    forward(mel (1, M, T)) -> wav (1, T * hop)
    """

    def __init__(self, gl: nn.Module, max_frames: int):
        super().__init__()
        a = gl.cfg
        self.n_iter, self.hop, self.n_fft = gl.n_iter, a.hop_length, a.n_fft
        self.momentum, self.power = gl.momentum, gl.power
        window = torch.hann_window(a.win_length)
        self.istft = OnnxISTFT(a.n_fft, a.hop_length, window)
        self.overlap = self.istft.overlap
        self.min_frames = a.n_fft // a.hop_length + 2  # GriffinLim pads shorter mels with silence
        self.silence = math.log(1e-5)
        padded = torch.nn.functional.pad(window, ((a.n_fft - a.win_length) // 2,
                                                  a.n_fft - a.win_length - (a.n_fft - a.win_length) // 2))
        n = torch.arange(a.n_fft, dtype=torch.float64)
        k = torch.arange(a.n_fft // 2 + 1, dtype=torch.float64)
        angle = 2 * math.pi * n[:, None] * k[None, :] / a.n_fft
        self.register_buffer("fwd_cos", (torch.cos(angle) * padded.double()[:, None]).float())
        self.register_buffer("fwd_sin", (-torch.sin(angle) * padded.double()[:, None]).float())
        self.register_buffer("inv_fb", gl.inv_fb.float().clone())
        self.n_bins = a.n_fft // 2 + 1
        # torch.rand((1, F, T), generator seeded 0) is the first F * T numbers of this one stream
        stream = torch.rand(self.n_bins * max(max_frames, self.min_frames), generator=torch.Generator().manual_seed(0))
        self.register_buffer("phase_stream", stream)

    def _stft(self, wav: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B, T * hop) -> real, imag (B, F, T): torch.stft(center=True, reflect)'s first T frames."""
        half = self.n_fft // 2
        x = torch.nn.functional.pad(wav[:, None, :], (half, half), mode="reflect")[:, 0, :]
        blocks = x.reshape(x.shape[0], -1, self.hop)  # (B, T + overlap, hop)
        frames = torch.cat([blocks[:, i:i + T, :] for i in range(self.overlap)], dim=2)  # (B, T, n_fft)
        return (frames @ self.fwd_cos).transpose(1, 2), (frames @ self.fwd_sin).transpose(1, 2)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        T_out = mel.shape[-1]
        # pad to at least min_frames with silence, as GriffinLim does for very short mels
        pad = torch.full((mel.shape[0], mel.shape[1], self.min_frames), self.silence, dtype=mel.dtype)
        n = torch.clamp(torch.ones((), dtype=torch.long) * mel.shape[-1], min=self.min_frames)  # traced, not frozen
        mel = torch.cat([mel, pad], dim=2)[:, :, torch.arange(n)]
        T = mel.shape[-1]
        mag = torch.clamp(self.inv_fb @ torch.exp(mel), min=0.0) ** self.power  # (B, F, T)
        u = self.phase_stream[torch.arange(self.n_bins * T)].reshape(1, self.n_bins, T)
        a_re, a_im = torch.cos(2 * math.pi * u), torch.sin(2 * math.pi * u)
        p_re, p_im = torch.zeros_like(a_re), torch.zeros_like(a_im)
        c = self.momentum / (1 + self.momentum)
        for _ in range(self.n_iter):
            wav = self.istft(mag * a_re, mag * a_im)
            r_re, r_im = self._stft(wav, T)
            a_re, a_im = r_re - c * p_re, r_im - c * p_im
            norm = torch.sqrt(a_re * a_re + a_im * a_im) + 1e-8
            a_re, a_im = a_re / norm, a_im / norm
            p_re, p_im = r_re, r_im
        wav = self.istft(mag * a_re, mag * a_im)
        return wav[:, :T_out * self.hop]


class PiperGraph(nn.Module):
    """Piper's interface around a voicetrain voice.

    forward(input (1, N) int64, input_lengths (1,) int64, scales (3,) float32[, sid (1,) int64])
      -> output (1, 1, samples) float32
    """

    def __init__(self, model: nn.Module, mel_mean, mel_std, vocoder: nn.Module, n_symbols: int, space_id: int,
                 multi_speaker: bool, speaker_order: list[int] | None = None):
        super().__init__()
        self.acoustic = ExportableFastSpeech2(model)
        self.vocoder = vocoder
        self.n_symbols, self.space_id, self.multi_speaker = n_symbols, space_id, multi_speaker
        # Piper's sid -> the voice's speaker id (speaker_order): Piper and its Home Assistant add-on speak sid 0
        # unless told otherwise, so the voice's default speaker goes first (see speaker_order())
        self.register_buffer("speaker_order", torch.as_tensor(speaker_order or [0], dtype=torch.long),
                             persistent=False)
        self.register_buffer("mel_mean", torch.as_tensor(mel_mean, dtype=torch.float32)[:, None], persistent=False)
        self.register_buffer("mel_std", torch.as_tensor(mel_std, dtype=torch.float32)[:, None], persistent=False)

    def tokens(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Piper ids (1, N) -> voicetrain tokens (1, K): pads, ^, $ and positions past ``lengths`` dropped.

        Never empty: text with no symbol of the voice says one space (a short silence)."""
        ids = ids[0]
        pos = torch.arange(ids.shape[0])
        keep = (ids > 0) & (ids < self.n_symbols) & (pos < lengths[0])
        kept = torch.cat([ids[torch.nonzero(keep).reshape(-1)], torch.full((1,), self.space_id, dtype=ids.dtype)])
        n = torch.clamp(keep.long().sum(), min=1)
        return kept[torch.arange(n)][None, :]

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor, scales: torch.Tensor,
                sid: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.tokens(input, input_lengths)
        speakers = self.speaker_order[sid.reshape(1) if sid is not None else torch.zeros(1, dtype=torch.long)]
        speed = 1.0 / torch.clamp(scales[1], min=0.05)  # Piper's length scale > 1 speaks slower
        mel, _ = self.acoustic(tokens, speakers, speed)
        wav = self.vocoder(mel * self.mel_std + self.mel_mean)
        return wav.reshape(1, 1, -1)


@dataclass
class PiperExportResult:
    onnx: Path
    config: Path
    vocoder: str
    seconds: float


def piper_name(parts: BundleParts, source: str | os.PathLike, name: str | None) -> str:
    """The file stem: ``name``, else the registered voice's name, else the run folder's name."""
    if name is None:
        name = parts.info.get("name") or Path(source).resolve().name
    if not _NAME_RE.match(name):
        raise ExportError(f"--name {name!r} is not a usable file name; use letters, digits, '_', '-' and '.', "
                          "e.g. en_US-myvoice-medium")
    return name


def choose_vocoder(parts: BundleParts, spec: str | os.PathLike | None,
                   griffin_lim_iters: int = 32) -> tuple[nn.Module, str]:
    """(Vocos or GriffinLim in eval mode, description). ``auto``: the voice's own neural vocoder (a bundle's
    vocoder.safetensors, or the vocoder run its run config names), else the shipped ``builtin`` Vocos, else
    (a voice whose mels the builtin does not fit) Griffin-Lim with a warning."""
    from voicetrain.inference.vocoder import (
        BUILTIN, GRIFFIN_LIM, VocoderError, is_builtin, is_griffin_lim, load_vocoder)
    from voicetrain.vocoders.griffin_lim import GriffinLim
    from voicetrain.vocoders.vocos import Vocos

    audio = parts.voice.audio
    spec = AUTO if spec is None else str(spec)
    if spec == AUTO:
        if parts.vocoder is not None:
            voc, what = parts.vocoder, f"the voice's own {parts.info['vocoder'].get('name', 'vocoder')}"
        elif not is_griffin_lim(parts.voice.vocoder) and (
                is_builtin(parts.voice.vocoder) or Path(parts.voice.vocoder).exists()):
            voc, what = load_vocoder(parts.voice.vocoder, audio), f"the run's vocoder {parts.voice.vocoder}"
        else:
            try:
                voc, what = load_vocoder(BUILTIN, audio), f"'{BUILTIN}' (the voice names {GRIFFIN_LIM} or none)"
            except VocoderError as e:
                warnings.warn(f"{e}; exporting with {GRIFFIN_LIM} (pass --vocoder VOCODER_RUN for a neural vocoder "
                              "trained on this voice's mel settings)", stacklevel=2)
                voc, what = load_vocoder(GRIFFIN_LIM, audio, griffin_lim_iters), f"{GRIFFIN_LIM} (the builtin does not fit this voice)"
    elif is_griffin_lim(spec):
        voc, what = load_vocoder(GRIFFIN_LIM, audio, griffin_lim_iters), f"{GRIFFIN_LIM} ({griffin_lim_iters} iterations)"
    else:
        voc, what = load_vocoder(spec, audio), f"'{BUILTIN}'" if is_builtin(spec) else str(spec)
    if not isinstance(voc, (Vocos, GriffinLim)):
        raise ExportError(f"vocoder {what} is a {type(voc).__name__}; the Piper graph supports Vocos and Griffin-Lim")
    return voc.eval(), what


def phoneme_id_map(symbols: tuple[str, ...], phoneme_type: str) -> tuple[dict[str, list[int]], list[list[str]]]:
    """(Piper's phoneme_id_map, vowel_clusters) for voicetrain's symbol table (see the module docstring)."""
    if not symbols or symbols[0] != PIPER_PAD:
        raise ExportError(f"the voice's symbol 0 is {symbols[:1]!r}, not the pad {PIPER_PAD!r}; it cannot be a Piper voice")
    clash = [s for s in (PIPER_BOS, PIPER_EOS) if s in symbols]
    if clash:
        raise ExportError(f"the voice's symbol table contains {clash}, which Piper reserves for sentence start/end")
    V = len(symbols)
    id_map: dict[str, list[int]] = {PIPER_PAD: [0], PIPER_BOS: [V], PIPER_EOS: [V + 1]}
    clusters: list[list[str]] = []
    for i, s in enumerate(symbols[1:], start=1):
        id_map[s] = [i]
        nfd = unicodedata.normalize("NFD", s)
        if nfd != s and len(nfd) > 1:  # Piper splits s into code points; its vowel_clusters join them again
            id_map.setdefault(nfd, [i])
            clusters.append(list(nfd))
    if phoneme_type == "text":  # piper passes the raw text's code points; voicetrain's chars voices lower-case
        for s, ids in list(id_map.items()):
            if s not in (PIPER_PAD, PIPER_BOS, PIPER_EOS) and s.upper() != s and len(s.upper()) == 1:
                id_map.setdefault(s.upper(), ids)
    return id_map, clusters


def language_entry(espeak_voice: str) -> dict[str, str]:
    """espeak voice 'en-us' -> Piper's language block {'code': 'en_US', 'family': 'en', 'region': 'US'}."""
    family, _, region = espeak_voice.partition("-")
    code = f"{family}_{region.upper()}" if region and region.isalpha() and len(region) == 2 else family
    entry = {"code": code, "family": family}
    if code != family:
        entry["region"] = region.upper()
    return entry


def piper_config(parts: BundleParts, name: str, vocoder_desc: str, described: str) -> dict[str, Any]:
    from voicetrain._version import __version__

    cfg = parts.voice
    phoneme_type = "text" if cfg.text.phonemizer == "chars" else "espeak"
    id_map, clusters = phoneme_id_map(tuple(parts.symbols.symbols), phoneme_type)
    speakers = [cfg.speakers[i] for i in speaker_order(cfg)]
    rate = cfg.audio.sample_rate
    config: dict[str, Any] = {
        "dataset": name,  # wyoming-piper names a custom voice by this
        "audio": {"sample_rate": rate, "quality": "medium" if rate >= 22050 else "low" if rate >= 16000 else "x_low"},
        "espeak": {"voice": cfg.text.language},
        "language": language_entry(cfg.text.language),
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": phoneme_type,
        "phoneme_map": {},
        "phoneme_id_map": id_map,
        "num_symbols": len(parts.symbols) + 2,
        "num_speakers": max(len(speakers), 1),
        "speaker_id_map": {s: i for i, s in enumerate(speakers)} if len(speakers) > 1 else {},
        "hop_length": cfg.audio.hop_length,
        "piper_version": PIPER_FORMAT_VERSION,
        "voicetrain": {
            "version": __version__, "source": described, "voice": parts.info.get("name"),
            "voice_version": parts.info.get("version"), "model": cfg.model, "vocoder": vocoder_desc,
            "tested_with": PIPER_TESTED,
            "notes": "ids 0 (_), ^ and $ are dropped inside the graph; noise_scale and noise_w are ignored "
                     "(FastSpeech 2 is deterministic); length_scale sets the speed",
        },
    }
    if clusters:
        config["vowel_clusters"] = clusters
    return config


def build_piper_graph(parts: BundleParts, vocoder: nn.Module) -> PiperGraph:
    from voicetrain.vocoders.griffin_lim import GriffinLim

    symbols = parts.symbols.symbols
    in_graph = (OnnxGriffinLim(vocoder, parts.model.cfg.max_frames) if isinstance(vocoder, GriffinLim)
                else OnnxVocos(vocoder))
    return PiperGraph(parts.model, parts.stats.mel_mean, parts.stats.mel_std, in_graph, len(symbols),
                      symbols.index(" ") if " " in symbols else 1, len(parts.voice.speakers) > 1,
                      speaker_order(parts.voice)).eval()


def speaker_order(cfg) -> list[int]:
    """The voice's speaker ids in Piper's sid order: its default speaker (a fine-tuned voice's own) first, the
    others in their order. Piper's speaker_id_map names them, so every speaker stays reachable by name."""
    from voicetrain.inference.synthesizer import default_speaker_id

    ids = list(range(max(len(cfg.speakers), 1)))
    first = default_speaker_id(list(cfg.speakers), dict(cfg.speaker_map))
    return [first] + [i for i in ids if i != first]


def export_piper(source: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None, store=None,
                 which: str = "best", vocoder: str | os.PathLike | None = None, force: bool = False,
                 griffin_lim_iters: int = 32, opset: int = 17) -> PiperExportResult:
    """Write OUT/NAME.onnx and OUT/NAME.onnx.json (a Piper voice) for SOURCE (see ``export.load_source``).

    ``vocoder``: 'auto' (default: the voice's neural vocoder, else 'builtin'), 'builtin', a vocoder run, or
    'griffin-lim' (``griffin_lim_iters`` iterations unrolled in the graph: slower and worse-sounding than Vocos).
    Existing files are an error unless ``force``.
    """
    import time

    from voicetrain.inference.vocoder import check_compatible

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder for NAME.onnx and NAME.onnx.json")
    parts, described = load_source(source, store, which)
    if parts.voice.model != "fastspeech2":
        raise ExportError(f"Piper export supports fastspeech2 voices; {described} is a {parts.voice.model}")
    name = piper_name(parts, source, name)
    onnx_path, json_path = out / f"{name}.onnx", out / f"{name}.onnx.json"
    existing = [p.name for p in (onnx_path, json_path) if p.exists()]
    if existing and not force:
        raise ExportError(f"{out} already holds {' and '.join(existing)}; pass --force to replace them, "
                          "or choose another --out or --name")
    voc, vocoder_desc = choose_vocoder(parts, vocoder, griffin_lim_iters)
    if hasattr(voc, "audio"):  # a neural vocoder; Griffin-Lim is built from the voice's own AudioConfig
        check_compatible(voc.audio, parts.voice.audio, vocoder_desc)
    config = piper_config(parts, name, vocoder_desc, described)
    graph = build_piper_graph(parts, voc)
    multi = graph.multi_speaker
    example = (torch.tensor([[1, 0, 2, 0, 3, 0, 4, 0, 5, 0, len(parts.symbols) + 1]], dtype=torch.long),
               torch.tensor([11], dtype=torch.long), torch.tensor([0.667, 1.0, 0.8]))
    if multi:
        example = example + (torch.zeros(1, dtype=torch.long),)
    input_names = list(PIPER_INPUTS) + (["sid"] if multi else [])
    out.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(onnx_path) as tmp, warnings.catch_warnings(), torch.no_grad():
            # the TorchScript exporter announces its deprecation and warns about traced shapes it keeps dynamic
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, str(tmp), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=["output"],
                              dynamic_axes={"input": {1: "phonemes"}, "output": {2: "samples"}})
    except Exception as e:
        raise ExportError(f"exporting {described} as a Piper voice failed: {type(e).__name__}: {e}") from e
    atomic_write_json(json_path, config)
    return PiperExportResult(onnx_path, json_path, vocoder_desc, time.perf_counter() - t0)


__all__ = ["OnnxGriffinLim", "OnnxISTFT", "OnnxVocos", "PiperExportResult", "PiperGraph", "build_piper_graph", "choose_vocoder",
           "export_piper", "language_entry", "phoneme_id_map", "piper_config", "speaker_order"]
