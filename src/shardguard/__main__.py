"""``python -m shardguard`` is the ``shardguard`` command."""

from .cli.app import run

run()
