"""voicetrain: turn your own voice recordings into a fast, small text-to-speech voice."""

__version__ = "0.1.0"
