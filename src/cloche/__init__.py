"""Cloche: isolated, durable, per-user sandboxes for one-to-one AI agents."""

__version__ = "0.1.0"
