"""`voicetrain studio`: record, check, train, listen to, compare and keep a voice in the browser."""
