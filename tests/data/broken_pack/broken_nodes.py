"""A node pack with a syntax-level failure at import time: it must be reported, never crash the app."""

raise RuntimeError("this pack is broken on purpose")
