"""Sealed links (M1, M2, M3): MAC or AEAD over each message's tensor frames, bound to its header.

    keys = LinkKeys("pi1"); keys.add_peers({"pi2": pi2_public})   # X25519, over the control plane
    frames = keys.sealer("s0>s1", "aead:chacha20-poly1305", "pi2").seal(header, seq, frames)
    plain = other.opener("s0>s1", "aead:chacha20-poly1305", "pi1").open(header, seq, frames)

The associated data is the whole message header (request id, sequence number,
link, route, tensor names and shapes), so a frame cannot be altered, moved to
another request or link, or replayed: ``Opener`` keeps a sliding replay window over
sequence numbers. AEAD seals each tensor frame under the nonce (frame index,
sequence number) into a fresh uninitialised buffer (``encrypt_into``: no copy
beyond the cipher's own output); a MAC leaves the frames as they are (zero-copy)
and adds one tag frame over header, sequence number and every frame. Keys are
per link, sender and receiver, from an X25519 exchange expanded with HKDF-SHA256,
so replicas sending on one link never share a key and nonces never repeat (each
sender's sequence number only grows, and keys are new at every deployment).

Every message also carries a *header tag* (``HeaderAuth``: keyed BLAKE2b-128 over the
header, with its own key per link, sender and receiver), on sealed and unsealed links
alike. It tells a message from a member of the plan, whose payload an on-path attacker
may have altered, from one an outsider made up: only the first may raise an alarm.
``ReplayWindow`` is the sliding window both the header check and ``Opener`` keep.

Every primitive is a well-kept library's: ``cryptography`` (OpenSSL) for X25519,
HKDF, AES-GCM and ChaCha20-Poly1305, ``hashlib``/``hmac`` for HMAC-SHA256 and
keyed BLAKE2b, and, when installed, the ``ascon`` package (0.0.9, the reference
implementation of Ascon v1.2 by its designers: Ascon-128, the CAESAR lightweight
winner that NIST SP 800-232's Ascon-AEAD128 descends from; pure Python, so slow).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import IntegrityError
from ..protections import CATALOGUE, available, check_protection, protection

try:  # optional: pip install 'shardguard[ascon]'
    import ascon as _ascon
except ImportError:  # pragma: no cover - depends on the environment
    _ascon = None

# the catalogue's figures (``protections.py``), by name
KEY_BYTES = {name: p.key_bytes for name, p in CATALOGUE.items()}
TAG_BYTES = {name: p.tag_bytes for name, p in CATALOGUE.items()}
# the seals that authenticate (a keyless check such as check:crc32 is not among them)
ALGORITHMS = tuple(name for name in available() if CATALOGUE[name].authenticates)
HEADER_AUTH = "auth:blake2b-128"  # the header tag every data message carries
HEADER_TAG_BYTES = 16
HEADER_TAG_KEY_BYTES = 32

Buffer = bytes | bytearray | memoryview
TagFunction = Callable[[bytes, bytes, int, Sequence[Buffer]], bytes]


def check_algorithm(algorithm: str) -> None:
    check_protection(algorithm, installed=True)


def tag_function(algorithm: str) -> TagFunction | None:
    """The tag of a tag-frame protection (None for one that seals each frame): the built-in
    MACs here, any other from the module the catalogue names (its ``tag(key, header, seq,
    frames)``)."""
    entry = protection(algorithm)
    if not entry.tag_frame:
        return None
    if entry.module == __name__:
        return lambda key, header, seq, frames: _mac(algorithm, key, header, seq, frames)
    tag: TagFunction = importlib.import_module(entry.module).tag
    return tag


def x25519_pair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair: the private key and the 32-byte public key."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def shared_secret(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise IntegrityError(f"bad X25519 public key: {exc}") from exc


def link_key(secret: bytes, link: str, algorithm: str, salt: bytes = b"") -> bytes:
    """The key for one link (and its ends) and algorithm, from an X25519 secret via HKDF-SHA256.

    ``algorithm`` is a protection or ``HEADER_AUTH``: each gets its own key.
    """
    if algorithm != HEADER_AUTH:
        check_algorithm(algorithm)
    size = HEADER_TAG_KEY_BYTES if algorithm == HEADER_AUTH else KEY_BYTES[algorithm]
    if not size:
        return b""  # a keyless check (it detects accidents, not attackers)
    info = f"shardguard link {link} {algorithm}".encode()
    return HKDF(hashes.SHA256(), size, salt or None, info).derive(secret)


class LinkKeys:
    """One endpoint's keys: its X25519 pair, its peers' public keys, and the link keys.

    The public keys travel over the authenticated control plane (CurveZMQ); each
    end derives the same key for (link, sender, receiver, algorithm) on its own.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._private, self.public = x25519_pair()
        self._peers: dict[str, bytes] = {}
        self._sealers: dict[tuple[str, str, str], Sealer] = {}
        self._openers: dict[tuple[str, str, str], Opener] = {}
        self._auths: dict[tuple[str, str, str], HeaderAuth] = {}

    def add_peers(self, publics: dict[str, bytes]) -> None:
        self._peers.update(publics)

    def _key(self, link: str, algorithm: str, sender: str, receiver: str) -> bytes:
        peer = receiver if sender == self.name else sender
        if peer not in self._peers:
            raise IntegrityError(f"no public key for {peer!r} (link {link})")
        secret = shared_secret(self._private, self._peers[peer])
        return link_key(secret, f"{link} {sender}>{receiver}", algorithm)

    def sealer(self, link: str, algorithm: str, receiver: str) -> Sealer:
        key = (link, algorithm, receiver)
        if key not in self._sealers:
            self._sealers[key] = Sealer(algorithm,
                                        self._key(link, algorithm, self.name, receiver))
        return self._sealers[key]

    def opener(self, link: str, algorithm: str, sender: str) -> Opener:
        key = (link, algorithm, sender)
        if key not in self._openers:
            self._openers[key] = Opener(algorithm, self._key(link, algorithm, sender, self.name))
        return self._openers[key]

    def header_auth(self, link: str, sender: str, receiver: str) -> HeaderAuth:
        """The header tag of ``link`` from ``sender`` to ``receiver`` (one of them is us).

        Raises ``IntegrityError`` when the other end is not a known peer.
        """
        key = (link, sender, receiver)
        auth = self._auths.get(key)
        if auth is None:
            auth = HeaderAuth(self._key(link, HEADER_AUTH, sender, receiver))
            self._auths[key] = auth
        return auth


class BufferPool:
    """Reusable output buffers for sealing and opening, so no message pays fresh pages.

    A buffer is lent out as a numpy array; while anything still refers to it (ZeroMQ
    sending it without a copy, a tensor view waiting in a worker), it is not handed out
    again. That is read from CPython's reference count, against the count of a buffer
    nobody holds, measured on this interpreter when the pool is made.
    """

    def __init__(self, per_size: int = 8) -> None:
        self.per_size = per_size
        self.pools: dict[int, list[np.ndarray]] = {}
        probe = [np.empty(1, np.uint8)]
        self._free = self._count(probe)

    @staticmethod
    def _count(pool: list[np.ndarray]) -> int:
        for array in pool:
            return sys.getrefcount(array)
        return 0

    def get(self, nbytes: int) -> np.ndarray:
        pool = self.pools.setdefault(nbytes, [])
        for array in pool:
            if sys.getrefcount(array) <= self._free:
                return array
        array = np.empty(nbytes, np.uint8)
        if len(pool) < self.per_size:
            pool.append(array)
        return array


def _nonce(index: int, seq: int, size: int) -> bytes:
    return struct.pack(">IQ", index, seq).rjust(size, b"\0")


class Sealer:
    """Seals messages for one link under one key; ``seq`` must grow with every message."""

    def __init__(self, algorithm: str, key: bytes) -> None:
        check_algorithm(algorithm)
        self.algorithm, self.key = algorithm, key
        self.aead = _aead(algorithm, key)
        self.tag_bytes = TAG_BYTES[algorithm]
        self.tag = tag_function(algorithm)
        self.buffers = BufferPool()

    def seal(self, header: bytes, seq: int, frames: Sequence[Buffer]) -> list[Buffer]:
        """The frames to send after ``header``: sealed tensor frames (and a MAC's tag frame)."""
        if self.tag is not None:
            return [*frames, self.tag(self.key, header, seq, frames)]
        out: list[Buffer] = []
        for i, frame in enumerate(frames):
            view = memoryview(frame).cast("B")
            if self.algorithm == "aead:ascon-128":
                out.append(_ascon.encrypt(self.key, _nonce(i, seq, 16), header, bytes(view),
                                          "Ascon-128"))
                continue
            buffer = self.buffers.get(view.nbytes + self.tag_bytes)  # overwritten whole
            self.aead.encrypt_into(_nonce(i, seq, 12), view, header, buffer)
            out.append(buffer.data)
        return out


class ReplayWindow:
    """Which sequence numbers of one link and sender were accepted: a sliding window.

    ``check`` refuses a number already accepted or older than the window; ``accept``
    records one, once the whole message it came in has been verified (so a forgery
    that fails verification cannot take its number from the genuine message). A
    number far ahead moves the window without a bitmap as large as the jump.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.highest = -1
        self.seen = 0  # bitmap: bit i set when (highest - i) was accepted

    def check(self, seq: int) -> None:
        if seq > self.highest:
            return
        age = self.highest - seq
        if age >= self.size:
            raise IntegrityError(f"sequence number {seq} is older than the replay window")
        if self.seen >> age & 1:
            raise IntegrityError(f"sequence number {seq} was already received (replay)")

    def accepted(self, seq: int) -> bool:
        """Whether ``seq`` was accepted (numbers older than the window count as accepted)."""
        if seq > self.highest:
            return False
        age = self.highest - seq
        return age >= self.size or bool(self.seen >> age & 1)

    def accept(self, seq: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest
            self.seen = 1 if shift >= self.size else (
                ((self.seen << shift) | 1) & ((1 << self.size) - 1))
            self.highest = seq
        else:
            self.seen |= 1 << (self.highest - seq)


class HeaderAuth:
    """The header tag of one link, sender and receiver: keyed BLAKE2b-128 (``hashlib``)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def tag(self, header: Buffer) -> bytes:
        return hashlib.blake2b(header, key=self.key, digest_size=HEADER_TAG_BYTES).digest()

    def verify(self, header: Buffer, tag: Buffer) -> bool:
        return hmac.compare_digest(self.tag(header), bytes(tag))


class Opener:
    """Opens messages from one link and sender; rejects altered, misplaced, replayed ones."""

    def __init__(self, algorithm: str, key: bytes, window: int = 1024) -> None:
        check_algorithm(algorithm)
        self.algorithm, self.key = algorithm, key
        self.aead = _aead(algorithm, key)
        self.tag_bytes = TAG_BYTES[algorithm]
        self.window = ReplayWindow(window)
        self.tag = tag_function(algorithm)
        self.buffers = BufferPool()

    def open(self, header: bytes, seq: int, frames: Sequence[Buffer],
             tensors: int | None = None) -> list[Buffer]:
        """The tensor frames in the clear; ``IntegrityError`` if anything is not as sealed.

        ``tensors`` is how many tensor frames the header announces: a message with
        another number of frames is refused before anything is accepted.
        """
        if tensors is not None and len(frames) != protection(self.algorithm).frames(tensors):
            raise IntegrityError(f"{len(frames)} sealed frames for {tensors} tensor(s)")
        if not frames:
            raise IntegrityError("a sealed message carries at least one frame")
        self.window.check(seq)
        if self.tag is not None:
            *data, tag = frames
            if not hmac.compare_digest(bytes(tag), self.tag(self.key, header, seq, data)):
                raise IntegrityError("authentication tag does not match")
            self.window.accept(seq)
            return data
        out: list[Buffer] = []
        for i, frame in enumerate(frames):
            view = memoryview(frame).cast("B")
            if view.nbytes < self.tag_bytes:
                raise IntegrityError("sealed frame shorter than its tag")
            out.append(self._decrypt(i, seq, header, view))
        self.window.accept(seq)
        return out

    def _decrypt(self, index: int, seq: int, header: bytes, view: memoryview) -> Buffer:
        if self.algorithm == "aead:ascon-128":
            plain = _ascon.decrypt(self.key, _nonce(index, seq, 16), header, bytes(view),
                                   "Ascon-128")
            if plain is None:
                raise IntegrityError("authentication tag does not match")
            return bytes(plain)
        buffer = self.buffers.get(view.nbytes - self.tag_bytes)
        try:
            self.aead.decrypt_into(_nonce(index, seq, 12), view, header, buffer)
        except InvalidTag:
            raise IntegrityError("authentication tag does not match") from None
        return buffer.data


def _aead(algorithm: str, key: bytes) -> Any:
    if algorithm.startswith("aead:aes"):
        return AESGCM(key)
    if algorithm == "aead:chacha20-poly1305":
        return ChaCha20Poly1305(key)
    return None  # a MAC, or Ascon (a module function, not an object)


def _mac(algorithm: str, key: bytes, header: bytes, seq: int, frames: Sequence[Buffer]) -> bytes:
    if algorithm == "mac:hmac-sha256":
        mac: hmac.HMAC | hashlib.blake2b = hmac.new(key, digestmod=hashlib.sha256)
    else:
        mac = hashlib.blake2b(key=key, digest_size=32)
    mac.update(struct.pack(">IQI", len(header), seq, len(frames)))
    mac.update(header)
    for frame in frames:
        view = memoryview(frame).cast("B")
        mac.update(struct.pack(">Q", view.nbytes))
        mac.update(view)
    return mac.digest()
