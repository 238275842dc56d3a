"""File outputs people look at (PLY clouds, PNG overlays)."""
