"""The ``host`` device profile: this machine, calibrated by measuring it.

MAC rate: timed convolutions; clock and AES instructions: /proc/cpuinfo;
memory: /proc/meminfo; crypto cycles per byte: the ``cryptography`` package
timed on 1 MiB messages. Power has no sensor here, so it is an assumption,
labelled as one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from functools import lru_cache
from pathlib import Path

import torch

from ._model import DeviceProfile, Figure, FlagFigure

CALIBRATED = "calibrated on host"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _clock_hz() -> tuple[float, str]:
    match = re.search(r"cpu MHz\s*:\s*([\d.]+)", _cpuinfo())
    if match:
        return float(match.group(1)) * 1e6, f"{CALIBRATED}: /proc/cpuinfo cpu MHz"
    return 2.0e9, "estimate: no clock reported by /proc/cpuinfo; 2 GHz assumed"


def _memory_bytes() -> tuple[float, str]:
    try:
        match = re.search(r"MemAvailable:\s*(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        match = None
    if match:
        return float(match.group(1)) * 1024, f"{CALIBRATED}: /proc/meminfo MemAvailable"
    return 4e9, "estimate: /proc/meminfo unreadable; 4 GB assumed"


def _time(fn: object, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def measure_mac_rate() -> float:
    """Effective MAC/s of this host on a 3×3 convolution typical of small CNNs (batch 8)."""
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    x = torch.rand(8, 32, 28, 28)
    macs = 8 * 32 * 28 * 28 * 32 * 9
    with torch.no_grad():
        conv(x)
        seconds = _time(lambda: conv(x), repeats=5)
    return macs / seconds


def measure_crypto(clock_hz: float, size: int = 1 << 20) -> dict[str, float]:
    """Cycles per byte of each supported algorithm on this host (1 MiB messages)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    data = os.urandom(size)
    nonce = os.urandom(12)
    key16, key32 = os.urandom(16), os.urandom(32)
    runs = {
        "aes-128-gcm": lambda: AESGCM(key16).encrypt(nonce, data, None),
        "aes-256-gcm": lambda: AESGCM(key32).encrypt(nonce, data, None),
        "chacha20-poly1305": lambda: ChaCha20Poly1305(key32).encrypt(nonce, data, None),
        "hmac-sha256": lambda: hmac.new(key32, data, hashlib.sha256).digest(),
        "blake2b": lambda: hashlib.blake2b(data, key=key32).digest(),
    }
    return {alg: _time(fn) * clock_hz / size for alg, fn in runs.items()}


@lru_cache(maxsize=1)
def host_profile() -> DeviceProfile:
    clock, clock_src = _clock_hz()
    memory, memory_src = _memory_bytes()
    has_aes = bool(re.search(r"^flags\s*:.*\baes\b", _cpuinfo(), re.M))
    power = "estimate: no power sensor on this host; a 2-core server share assumed"
    crypto = {alg: Figure(value=cpb, source=f"{CALIBRATED}: 1 MiB messages, cryptography "
                                            "(AEADs) and hashlib (HMAC, BLAKE2)")
              for alg, cpb in measure_crypto(clock).items()}
    return DeviceProfile(
        description="this machine, calibrated by measurement",
        mac_rate=Figure(value=measure_mac_rate(), source=f"{CALIBRATED}: timed 3x3 convolution"),
        memory_bytes=Figure(value=memory, source=memory_src),
        active_power_w=Figure(value=15.0, source=power),
        idle_power_w=Figure(value=5.0, source=power),
        clock_hz=Figure(value=clock, source=clock_src),
        has_aes=FlagFigure(value=has_aes, source=f"{CALIBRATED}: /proc/cpuinfo flags"),
        crypto_cycles_per_byte=crypto,
    )
