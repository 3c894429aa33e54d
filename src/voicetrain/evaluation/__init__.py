"""Objective evaluation: intelligibility (pocketsphinx CER/WER), speaker similarity
(resemblyzer), quality (DNSMOS), MCD-DTW / F0 against references, and speed.

``metrics`` holds the pure functions; ``models.Evaluator`` loads each external model
once, lazily; ``evaluate_audio`` scores a folder of wavs (``voicetrain eval-audio``).
Import the submodules directly: this package imports nothing heavy on its own.
"""
