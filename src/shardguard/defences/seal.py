"""Sealed links (M1, M2): MAC or AEAD over each tensor frame, bound to its header.

    key = link_key(shared_secret, "s0>s1", "aead:chacha20-poly1305")
    sealer, opener = Sealer(alg, key), Opener(alg, key)
    body = sealer.seal(header_bytes, seq, tensor_bytes)   # ciphertext + tag (or data + tag)
    data = opener.open(header_bytes, seq, body)           # IntegrityError if anything changed

The associated data is the message header (request id, sequence number, link,
tensor names, shapes), so a frame cannot be altered, moved to another request or
link, or replayed: ``Opener`` keeps a sliding replay window over sequence
numbers. Nonces are the 64-bit sequence number (per link and key, never reused:
the sender's counter only grows). Keys come from an X25519 exchange expanded with
HKDF-SHA256, one per link and algorithm. All primitives are the ``cryptography``
package's (OpenSSL) and ``hashlib``'s; nothing here is a hand-written cipher or MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigError, IntegrityError

KEY_BYTES = {"mac:hmac-sha256": 32, "mac:blake2b": 32, "aead:aes-128-gcm": 16,
             "aead:aes-256-gcm": 32, "aead:chacha20-poly1305": 32}
TAG_BYTES = {"mac:hmac-sha256": 32, "mac:blake2b": 32, "aead:aes-128-gcm": 16,
             "aead:aes-256-gcm": 16, "aead:chacha20-poly1305": 16}
ALGORITHMS = tuple(KEY_BYTES)


def _check(algorithm: str) -> None:
    if algorithm not in KEY_BYTES:
        raise ConfigError(f"unknown protection {algorithm!r} "
                          f"(known: none, {', '.join(ALGORITHMS)})")


def x25519_pair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair: the private key and the 32-byte public key."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def shared_secret(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def link_key(secret: bytes, link: str, algorithm: str, salt: bytes = b"") -> bytes:
    """The key for one link and algorithm, expanded from an X25519 secret with HKDF-SHA256."""
    _check(algorithm)
    info = f"shardguard link {link} {algorithm}".encode()
    return HKDF(hashes.SHA256(), KEY_BYTES[algorithm], salt or None, info).derive(secret)


def _nonce(seq: int) -> bytes:
    return b"\0\0\0\0" + struct.pack(">Q", seq)


class Sealer:
    """Seals frames for one link under one key; ``seq`` must grow with every message."""

    def __init__(self, algorithm: str, key: bytes) -> None:
        _check(algorithm)
        self.algorithm, self.key = algorithm, key
        self.aead = _aead(algorithm, key)

    def seal(self, header: bytes, seq: int, data: bytes | memoryview) -> bytes:
        """AEAD: ciphertext ‖ tag. MAC: data ‖ tag over header ‖ seq ‖ data."""
        if self.aead is not None:
            return self.aead.encrypt(_nonce(seq), bytes(data), header)
        return bytes(data) + _mac(self.algorithm, self.key, header, seq, data)


class Opener:
    """Opens frames from one link; rejects altered, misplaced and replayed messages."""

    def __init__(self, algorithm: str, key: bytes, window: int = 1024) -> None:
        _check(algorithm)
        self.algorithm, self.key, self.window = algorithm, key, window
        self.aead = _aead(algorithm, key)
        self.highest = -1
        self.seen = 0  # bitmap: bit i set when (highest - i) was accepted

    def open(self, header: bytes, seq: int, body: bytes | memoryview) -> bytes:
        self._fresh(seq)
        tag_len = TAG_BYTES[self.algorithm]
        if len(body) < tag_len:
            raise IntegrityError("sealed frame shorter than its tag")
        if self.aead is not None:
            try:
                data = self.aead.decrypt(_nonce(seq), bytes(body), header)
            except InvalidTag:
                raise IntegrityError("authentication tag does not match") from None
        else:
            data, tag = bytes(body[:-tag_len]), bytes(body[-tag_len:])
            if not hmac.compare_digest(tag, _mac(self.algorithm, self.key, header, seq, data)):
                raise IntegrityError("authentication tag does not match")
        self._accept(seq)
        return data

    def _fresh(self, seq: int) -> None:
        if seq > self.highest:
            return
        age = self.highest - seq
        if age >= self.window:
            raise IntegrityError(f"sequence number {seq} is older than the replay window")
        if self.seen >> age & 1:
            raise IntegrityError(f"sequence number {seq} was already received (replay)")

    def _accept(self, seq: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest
            self.seen = ((self.seen << shift) | 1) & ((1 << self.window) - 1)
            self.highest = seq
        else:
            self.seen |= 1 << (self.highest - seq)


def _aead(algorithm: str, key: bytes) -> AESGCM | ChaCha20Poly1305 | None:
    if algorithm.startswith("aead:aes"):
        return AESGCM(key)
    if algorithm == "aead:chacha20-poly1305":
        return ChaCha20Poly1305(key)
    return None


def _mac(algorithm: str, key: bytes, header: bytes, seq: int, data: bytes | memoryview) -> bytes:
    if algorithm == "mac:hmac-sha256":
        mac = hmac.new(key, digestmod=hashlib.sha256)
    else:
        mac = hashlib.blake2b(key=key, digest_size=32)
    mac.update(struct.pack(">I", len(header)))
    mac.update(header)
    mac.update(struct.pack(">Q", seq))
    mac.update(data)
    return mac.digest()
