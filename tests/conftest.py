"""Shared fixtures: the real dataset, a CLI runner that uses a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardguard.data import Split, load_split

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> Result:
    """Run ``shardguard ARGS`` as a real process, as a user would."""
    full_env = {**os.environ, "SHARDGUARD_QUIET": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "shardguard", *args], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def test_split() -> Split:
    return load_split("test")


@pytest.fixture(scope="session")
def train_split() -> Split:
    return load_split("train")
