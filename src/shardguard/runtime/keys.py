"""CurveZMQ key pairs for the coordinator and every device.

    shardguard keys generate keys/ --devices pi1,pi2,pi3,pi4

writes ``keys/coordinator.key`` and ``.key_secret``, one pair per device, and
``keys/authorized/coordinator.key``: the public keys a worker accepts commands
from. Copy ``NAME.key_secret`` and ``authorized/`` to each board; keep
``coordinator.key_secret`` on the coordinator only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import zmq.auth

from ..errors import ConfigError

COORDINATOR = "coordinator"


def generate(directory: Path, devices: list[str], *, force: bool = False) -> list[Path]:
    """Create key pairs for the coordinator and ``devices``; return the files written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets never world-readable
    written: list[Path] = []
    for name in [COORDINATOR, *devices]:
        public = directory / f"{name}.key"
        if public.exists() and not force:
            raise ConfigError(f"{public}: already exists (use --force to overwrite)")
    for name in [COORDINATOR, *devices]:
        for suffix in (".key", ".key_secret"):
            (directory / f"{name}{suffix}").unlink(missing_ok=True)
        public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
        Path(secret_file).chmod(0o600)
        written += [Path(public_file), Path(secret_file)]
    authorized = directory / "authorized"
    authorized.mkdir(exist_ok=True)
    shutil.copy(directory / f"{COORDINATOR}.key", authorized / f"{COORDINATOR}.key")
    written.append(authorized / f"{COORDINATOR}.key")
    return written


def load_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    path = directory / f"{name}.key_secret"
    if not path.is_file():
        raise ConfigError(f"{path}: key file not found (make it with: shardguard keys generate)")
    public, secret = zmq.auth.load_certificate(str(path))
    assert secret is not None
    return public, secret


def load_public(directory: Path, name: str) -> bytes:
    path = directory / f"{name}.key"
    if not path.is_file():
        raise ConfigError(f"{path}: public key not found")
    public, _ = zmq.auth.load_certificate(str(path))
    return public
