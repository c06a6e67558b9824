"""localrouter: a local OpenAI-compatible gateway with one merged, cached model list."""

__version__ = "0.1.0"
# How the daemon names itself: its User-Agent upstream, and the Server header of its
# /api/version (by which another daemon's discovery knows it and does not list it).
PRODUCT = f"localrouter/{__version__}"
