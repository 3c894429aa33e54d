"""Inference: load a checkpoint or bundle and synthesize. Never imports training code or Lightning."""
