"""Serving of registered voices: HTTP (voicetrain's API and OpenAI's) and Wyoming (FastAPI + uvicorn + wyoming, the `serve` extra)."""
