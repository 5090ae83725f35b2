"""The ``shardguard`` command: a thin layer over the library (see ``app.py``)."""

from .app import app, main

__all__ = ["app", "main"]
