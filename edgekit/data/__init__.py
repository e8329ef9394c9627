"""Corpora the bundled models are trained and evaluated on (stdlib.py)."""
