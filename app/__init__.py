"""Reelgraph studio: the PySide6 node canvas, docks and run controller over the engine."""
