"""HTTP serving of registered voices (FastAPI + uvicorn, the `serve` extra)."""
