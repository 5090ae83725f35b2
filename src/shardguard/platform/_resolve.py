"""Platforms resolved: built-in profiles and media, platform files, and every figure with
its source (the classes are in ``_model``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from .._config import load_yaml, read_yaml, validate
from ..errors import ConfigError
from ._model import (
    BUILTIN_DIR,
    GIVEN,
    HERE,
    Device,
    DeviceProfile,
    DeviceSpec,
    Link,
    MediumSpec,
    Platform,
    PlatformSpec,
    Profiles,
)


@lru_cache(maxsize=1)
def profiles() -> Profiles:
    return load_yaml(Profiles, HERE / "profiles.yaml")


_DEVICE_FIELDS = ("mac_rate", "memory_bytes", "active_power_w", "idle_power_w", "clock_hz")


def _base(spec: DeviceSpec, where: str) -> DeviceProfile | None:
    """The profile ``spec`` names (``host``: this machine, calibrated), or None."""
    if spec.profile == "host":
        from .host import host_profile

        return host_profile()
    if spec.profile is None:
        return None
    base = profiles().devices.get(spec.profile)
    if base is None:
        known = ", ".join([*profiles().devices, "host"])
        raise ConfigError(f"{where}: unknown profile {spec.profile!r} (known: {known})")
    return base


def _from_profile(base: DeviceProfile) -> tuple[dict[str, Any], dict[str, str],
                                                dict[str, float]]:
    """A profile's figures (values, their sources, crypto cycles per byte)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    crypto: dict[str, float] = {}
    for key in (*_DEVICE_FIELDS, "has_aes"):
        fig = getattr(base, key)
        values[key], sources[key] = fig.value, fig.source
    for alg, fig in base.crypto_cycles_per_byte.items():
        crypto[alg] = fig.value
        sources[f"crypto_cycles_per_byte.{alg}"] = fig.source
    for key in ("stage_s", "message_s", "hop_s", "coordinator_s"):
        fig = getattr(base, key)
        if fig is not None:
            values[key], sources[key] = fig.value, fig.source
    values["crypto_fixed_s"] = {a: f.value for a, f in base.crypto_fixed_s.items()}
    sources.update({f"crypto_fixed_s.{a}": f.source for a, f in base.crypto_fixed_s.items()})
    if base.media_in_power is not None:
        values["media_in_power"] = frozenset(base.media_in_power.value)
        sources["media_in_power"] = base.media_in_power.source
    return values, sources, crypto


def _resolve_device(spec: DeviceSpec, where: str) -> Device:
    base = _base(spec, where)
    values, sources, crypto = _from_profile(base) if base is not None else ({}, {}, {})
    rates: dict[str, tuple[float, str]] = {
        k: (f.value, f.source) for k, f in (base.mac_rates if base else {}).items()}
    rates.update({k: (v, GIVEN) for k, v in (spec.mac_rates or {}).items()})
    for kind, (_, source) in rates.items():
        sources[f"mac_rates.{kind}"] = source
    if spec.media_in_power is not None:
        unknown = sorted(set(spec.media_in_power) - set(profiles().media))
        if unknown:
            raise ConfigError(f"{where}: media_in_power: unknown medium {unknown[0]!r} "
                              f"(known: {', '.join(profiles().media)})")
        values["media_in_power"] = frozenset(spec.media_in_power)
        sources["media_in_power"] = GIVEN
    for key in (*_DEVICE_FIELDS, "has_aes"):
        if getattr(spec, key) is not None:
            values[key], sources[key] = getattr(spec, key), GIVEN
    for alg, cpb in (spec.crypto_cycles_per_byte or {}).items():
        crypto[alg] = cpb
        sources[f"crypto_cycles_per_byte.{alg}"] = GIVEN
    if "memory_bytes" not in values:
        raise ConfigError(f"{where}: device has no memory_bytes (and no profile giving one)")
    missing = [k for k in (*_DEVICE_FIELDS, "has_aes") if k not in values]
    if missing:
        raise ConfigError(f"{where}: device needs {', '.join(missing)} (or a profile)")
    speed = {k: rate / values["mac_rate"] for k, (rate, _) in rates.items()}
    int8 = (spec.int8_mac_rate, GIVEN) if spec.int8_mac_rate is not None else (
        (base.int8_mac_rate.value, base.int8_mac_rate.source)
        if base is not None and base.int8_mac_rate is not None else None)
    if int8 is not None:
        sources["int8_mac_rate"] = int8[1]
    return Device(name=spec.name, profile=spec.profile, crypto_cycles_per_byte=crypto,
                  sources=sources, layer_speed=speed,
                  int8_speed=int8[0] / values["mac_rate"] if int8 is not None else 1.0,
                  **values)


def _resolve_medium(spec: MediumSpec, where: str) -> tuple[Link, dict[str, str]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if spec.profile is not None:
        base = profiles().media.get(spec.profile)
        if base is None:
            raise ConfigError(f"{where}: unknown medium {spec.profile!r} "
                              f"(known: {', '.join(profiles().media)})")
        for key in ("bandwidth_bps", "latency_s", "tx_j_per_byte", "rx_j_per_byte", "loss"):
            fig = getattr(base, key)
            values[key], sources[key] = fig.value, fig.source
        values["shared"] = base.shared
        values["medium"] = spec.profile
    for key in ("bandwidth_bps", "latency_s", "tx_j_per_byte", "rx_j_per_byte", "loss", "shared"):
        if getattr(spec, key) is not None:
            values[key], sources[key] = getattr(spec, key), GIVEN
    missing = [k for k in ("bandwidth_bps", "latency_s", "tx_j_per_byte", "rx_j_per_byte")
               if k not in values]
    if missing:
        raise ConfigError(f"{where}: medium needs {', '.join(missing)} (or a profile)")
    values.setdefault("loss", 0.0)
    values.setdefault("shared", False)
    if spec.tx_j_per_byte is not None or spec.rx_j_per_byte is not None:
        values["medium"] = ""  # per-byte figures of the file's own: charged as given
    return Link(**values), sources


def build_platform(spec: PlatformSpec, source: str) -> Platform:
    devices = {d.name: _resolve_device(d, f"{source}: devices.{i} ({d.name})")
               for i, d in enumerate(spec.devices)}
    medium, medium_sources = _resolve_medium(spec.medium, f"{source}: medium")
    overrides = {}
    for link in spec.links:
        overrides[frozenset((link.a, link.b))] = Link(
            bandwidth_bps=link.bandwidth_bps or medium.bandwidth_bps,
            latency_s=medium.latency_s if link.latency_s is None else link.latency_s,
            loss=medium.loss if link.loss is None else link.loss,
            tx_j_per_byte=medium.tx_j_per_byte, rx_j_per_byte=medium.rx_j_per_byte,
            shared=medium.shared, medium=medium.medium)
    return Platform(spec.name, spec.description, devices, medium, medium_sources, overrides,
                    source)


def builtin_platforms() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_platform(ref: str | Path) -> Platform:
    """A platform by built-in name (see ``builtin_platforms()``) or YAML file path."""
    path = Path(ref)
    if not path.suffix and (BUILTIN_DIR / f"{ref}.yaml").is_file():
        path = BUILTIN_DIR / f"{ref}.yaml"
        source = str(ref)
    elif path.is_file():
        source = str(path)
    else:
        raise ConfigError(f"{ref}: no such platform file or built-in platform "
                          f"(built-in: {', '.join(builtin_platforms())})")
    spec = validate(PlatformSpec, read_yaml(path), source)
    return build_platform(spec, source)
