"""Acoustic models. One model per file with its config beside it; see registry.py."""
