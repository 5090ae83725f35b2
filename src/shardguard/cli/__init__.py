"""The ``shardguard`` command: a thin layer over the library (see ``app.py``)."""

from __future__ import annotations

import sys


def run() -> None:
    """Console-script entry: a clear message when only the light (worker) install is present."""
    try:
        from .app import run as app_run
    except ImportError as exc:
        print(f"error: the shardguard command needs the full install ({exc.name} is missing): "
              "pip install 'shardguard[full]'; on a board, `shardguard-worker` runs with "
              "'shardguard[worker]'", file=sys.stderr)
        sys.exit(1)
    app_run()
