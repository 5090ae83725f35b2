"""The catalogue of link protections: every name a plan may put on a link, and where it lives.

    protection("aead:chacha20-poly1305").tag_bytes     # 16, on every tensor frame
    check_protection("aead:rot13")                      # ConfigError: unknown protection ...

A protection is one unit: what it adds on the wire (a tag on each tensor frame, or
one tag frame of its own), the module that seals and opens messages with it on
workers and on the coordinator, and its cost, which each device of a platform
gives in cycles per byte (``crypto_cycles_per_byte`` under the name after the
colon, e.g. ``chacha20-poly1305``; the cost model refuses a plan whose devices have
no figure for a protection it uses). The local executor treats every protection
the same way: an altered message on a protected link is detected (``defences/sealed.py``).

Adding a protection is one module and one line here. A protection with a tag frame
of its own names a module with ``tag(key, header, seq, frames) -> bytes``; the
built-in MACs and AEADs are implemented in ``defences/seal.py``. This module sits
below every other package (plans check names against it) and imports only the
standard library.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["CATALOGUE", "Protection", "available", "check_protection", "names", "protection",
           "strongest"]


@dataclass(frozen=True)
class Protection:
    """One link protection: its wire footprint, and the module that implements it."""

    name: str  # "kind:algorithm", e.g. "mac:blake2b"
    key_bytes: int  # per link, sender and receiver (HKDF from the X25519 secret); 0: keyless
    tag_bytes: int  # added to each tensor frame, or the size of the tag frame of its own
    tag_frame: bool  # True: tensor frames cross unchanged, followed by one tag frame
    module: str = "shardguard.defences.seal"  # seals and opens messages with it
    requires: str = ""  # an optional package it needs ("" none), named in the error
    authenticates: bool = True  # False: detects accidental changes only (no key)

    @property
    def algorithm(self) -> str:
        """The name the platforms' ``crypto_cycles_per_byte`` figures use."""
        return self.name.split(":", 1)[1]

    @property
    def strength(self) -> int:
        """What it protects, for choosing the strongest: an AEAD (3: integrity and secrecy)
        over a MAC (2) over a keyless check (1: accidents only); ``none`` is 0."""
        return 1 if not self.authenticates else 2 if self.tag_frame else 3

    def frames(self, tensors: int) -> int:
        """How many frames follow the header when ``tensors`` tensor frames are protected."""
        return tensors + 1 if self.tag_frame else tensors

    def frame_bytes(self, nbytes: int) -> int:
        """The size of one protected tensor frame holding ``nbytes``."""
        return nbytes if self.tag_frame else nbytes + self.tag_bytes


CATALOGUE: dict[str, Protection] = {p.name: p for p in (
    Protection("mac:hmac-sha256", key_bytes=32, tag_bytes=32, tag_frame=True),
    Protection("mac:blake2b", key_bytes=32, tag_bytes=32, tag_frame=True),
    Protection("aead:aes-128-gcm", key_bytes=16, tag_bytes=16, tag_frame=False),
    Protection("aead:aes-256-gcm", key_bytes=32, tag_bytes=16, tag_frame=False),
    Protection("aead:chacha20-poly1305", key_bytes=32, tag_bytes=16, tag_frame=False),
    Protection("aead:ascon-128", key_bytes=16, tag_bytes=16, tag_frame=False,
               requires="ascon"),
    Protection("check:crc32", key_bytes=0, tag_bytes=4, tag_frame=True,
               module="shardguard.defences.crc32", authenticates=False),
)}


def names() -> tuple[str, ...]:
    """Every protection's name, installed or not."""
    return tuple(CATALOGUE)


def available() -> tuple[str, ...]:
    """The protections this environment can run (their optional package is installed)."""
    return tuple(n for n, p in CATALOGUE.items()
                 if not p.requires or importlib.util.find_spec(p.requires) is not None)


def protection(name: str) -> Protection:
    """The catalogue entry of ``name``; ``ConfigError`` if there is none."""
    found = CATALOGUE.get(name)
    if found is None:
        raise ConfigError(f"unknown protection {name!r} (known: none, {', '.join(CATALOGUE)})")
    return found


def strongest(names: Iterable[str]) -> str:
    """The strongest of ``names`` (protections or ``none``); ``none`` when there are none."""
    return max(names, key=lambda n: 0 if n == "none" else protection(n).strength,
               default="none")


def check_protection(name: str, *, installed: bool = False) -> Protection:
    """``protection(name)``, and with ``installed`` also that it can run here."""
    found = protection(name)
    if installed and name not in available():
        hint = f"pip install 'shardguard[{found.requires}]'"
        raise ConfigError(f"unknown protection {name!r} ({hint}) "
                          f"(known: none, {', '.join(available())})")
    return found
