"""The ``host`` device profile: this machine, calibrated by measuring it.

Clock and AES instructions: /proc/cpuinfo; memory: /proc/meminfo. Compute and
sealing: from the calibration file (``calibration_file()``) when it was measured
on this machine (same CPU, cores, onnxruntime and cryptography), written by
``runtime.calibrate`` from the workers' own code paths (onnxruntime on one
thread per layer type, the fixed cost of a stage run, of a message, and of each
seal); else a quick stand-in: a timed torch convolution and the ``cryptography``
package on 1 MiB messages, labelled as such. Power has no sensor here, so it is an
assumption, labelled as one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import re
import time
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from ._model import DeviceProfile, Figure, FlagFigure

CALIBRATED = "calibrated on host"
CALIBRATION_ENV = "SHARDGUARD_CALIBRATION"  # another calibration file than the user's cache
#: the figures a calibration file holds (``Figure``s, or per-name mappings of them)
CALIBRATED_FIELDS = ("clock_hz", "mac_rate", "mac_rates", "crypto_cycles_per_byte",
                     "crypto_fixed_s", "stage_s", "message_s", "hop_s", "coordinator_s")


def calibration_file() -> Path:
    """Where this machine's calibration is cached: ``$SHARDGUARD_CALIBRATION``, else
    ``$XDG_CACHE_HOME/shardguard/host-calibration.json`` (``~/.cache`` by default)."""
    given = os.environ.get(CALIBRATION_ENV)
    if given:
        return Path(given)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "shardguard" / "host-calibration.json"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    """What a calibration holds for: the CPU, the cores this process may use, and the
    libraries the workers compute and seal with."""
    match = re.search(r"model name\s*:\s*(.+)", _cpuinfo())
    return {"cpu": match.group(1).strip() if match else platform.processor() or "unknown",
            "arch": platform.machine(), "cores": host_cores(), "cpus": os.cpu_count() or 1,
            "onnxruntime": _version("onnxruntime"), "cryptography": _version("cryptography")}


def host_cores() -> int:
    """Cores this process (and the workers it spawns) may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cached_calibration() -> dict[str, Any] | None:
    """The calibration file's figures, if it was measured on this machine; else None."""
    path = calibration_file()
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("machine") != machine():
        return None
    figures = saved.get("figures")
    return figures if isinstance(figures, dict) else None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def clock_hz() -> tuple[float, str]:
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


def measure_crypto(clock: float, size: int = 1 << 20) -> dict[str, float]:
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
    return {alg: _time(fn) * clock / size for alg, fn in runs.items()}


def _quick(clock: float) -> dict[str, Any]:
    """Stand-in figures when no calibration of this machine is cached (see the docstring)."""
    quick = "quick stand-in, not the workers' code path"
    crypto = {alg: {"value": cpb, "source": f"{CALIBRATED} ({quick}): 1 MiB messages, "
                                            "cryptography (AEADs) and hashlib (HMAC, BLAKE2)"}
              for alg, cpb in measure_crypto(clock).items()}
    return {"mac_rate": {"value": measure_mac_rate(),
                         "source": f"{CALIBRATED} ({quick}): timed torch 3x3 convolution"},
            "crypto_cycles_per_byte": crypto}


@lru_cache(maxsize=1)
def host_profile() -> DeviceProfile:
    clock, clock_src = clock_hz()
    memory, memory_src = _memory_bytes()
    has_aes = bool(re.search(r"^flags\s*:.*\baes\b", _cpuinfo(), re.M))
    power = "estimate: no power sensor on this host; a 2-core server share assumed"
    figures = cached_calibration() or _quick(clock)
    return DeviceProfile.model_validate({
        "description": "this machine, calibrated by measurement",
        "memory_bytes": Figure(value=memory, source=memory_src),
        "active_power_w": Figure(value=15.0, source=power),
        "idle_power_w": Figure(value=5.0, source=power),
        "clock_hz": Figure(value=clock, source=clock_src),
        "has_aes": FlagFigure(value=has_aes, source=f"{CALIBRATED}: /proc/cpuinfo flags"),
        **{k: v for k, v in figures.items() if k in CALIBRATED_FIELDS}})
