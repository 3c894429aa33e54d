"""Audio I/O, features and silence trimming: pure functions and buffer-only modules."""
