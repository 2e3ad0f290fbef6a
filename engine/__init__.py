"""Reelgraph engine: graph documents, node registry, caching executor, worker process (no Qt)."""

__version__ = "0.1.0"
