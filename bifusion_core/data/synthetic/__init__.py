"""Procedural synthetic data (the project's embedded default: no data set ships with it)."""
from .cloud import synthetic_room_cloud

__all__ = ["synthetic_room_cloud"]
