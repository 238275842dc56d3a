"""Training: python -m bifusion_core.train (see __main__.py)."""
