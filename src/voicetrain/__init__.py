"""voicetrain: turn your own voice recordings into a fast, small text-to-speech voice."""

from voicetrain._version import __version__

__all__ = ["__version__", "load_voice"]


def load_voice(name_or_path, store=None):
    """Load a registered voice (NAME, NAME@vN, NAME@TAG) or a bundle folder.

    ``load_voice("demo").synthesize("Hello.", speaker=None, speed=1.0) -> (samples, sample_rate)``.
    Imported lazily so that ``import voicetrain`` stays cheap; never imports training code.
    """
    from voicetrain.inference.bundle import load_voice as _load_voice

    return _load_voice(name_or_path, store=store)
