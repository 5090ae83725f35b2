"""ShardGuard's one tree of errors.

Every error the library raises on purpose is a ``ShardGuardError``; foreign
exceptions (torch, onnx, pyzmq, cryptography, OSError, yaml, pydantic) are
translated where they enter, with ``raise Mapped(msg) from exc``. The CLI turns
any of them into one line and a non-zero exit, in one place (``cli/app.py``).

    ShardGuardError
     ├── ConfigError            a user-supplied thing is wrong: option, file, YAML
     │    ├── DataError         a dataset file is missing or corrupt
     │    └── ModelError        a model reference, factory, weights file or input shape
     ├── PlanningError          no plan satisfies the constraints, or a plan is invalid
     ├── TransportError         the network failed: unreachable, deadline passed
     │    ├── AuthenticationError   a peer is not who it must be
     │    └── MalformedMessage      a message is not what the protocol allows
     └── IntegrityError         data was altered: bad tag, replay, weight digest mismatch

Messages are written to be shown alone on one line: they name the file, field
or node at fault and what is wrong with it.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DataError",
    "IntegrityError",
    "MalformedMessage",
    "ModelError",
    "PlanningError",
    "ShardGuardError",
    "TransportError",
]


class ShardGuardError(Exception):
    """Root of every error ShardGuard raises on purpose."""


class ConfigError(ShardGuardError):
    """A user-supplied option, file or configuration is invalid."""


class DataError(ConfigError):
    """A dataset is missing, unreadable or corrupt."""


class ModelError(ConfigError):
    """A model cannot be built, loaded, traced or fed the given input."""


class PlanningError(ShardGuardError):
    """No plan satisfies the constraints, or a plan is inconsistent."""


class TransportError(ShardGuardError):
    """A network operation failed or missed its deadline."""


class AuthenticationError(TransportError):
    """A peer failed authentication."""


class MalformedMessage(TransportError):
    """A message failed validation (header, frame sizes, shapes, dtypes)."""


class IntegrityError(ShardGuardError):
    """Data failed an integrity check (tag, replay window, digest)."""
