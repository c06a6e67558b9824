"""The web console at /ui: static pages (HTML, CSS and ES modules with no build step, shipped
as package data) that read the daemon's own JSON endpoints, plus the few endpoints only the
console needs (api.py)."""
