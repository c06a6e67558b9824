"""localrouter: a local OpenAI-compatible gateway with one merged, cached model list."""

__version__ = "0.1.0"
