"""Training: the Lightning module, callbacks (monitoring, health checks) and train(cfg)."""
