"""Platforms: devices and the links between them, from YAML, with every figure's source.

A platform file names devices (each from a built-in profile, the calibrated
``host``, or explicit figures) and the medium that connects them, with optional
per-pair link overrides::

    name: my-boards
    medium: ethernet-100m          # built-in medium, or a mapping of explicit figures
    devices:
      - {name: pi1, profile: raspberry-pi-4}
      - {name: nano, profile: jetson-nano-10w, memory_bytes: 2.0e9}
    links:
      - {a: pi1, b: nano, bandwidth_bps: 5.0e7, latency_s: 0.002}

Units are SI base units: MAC/s, bytes, W, Hz, bit/s, s, J/byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .._config import Config, load_yaml, read_yaml, validate
from ..errors import ConfigError

HERE = Path(__file__).parent
BUILTIN_DIR = HERE / "builtin"
GIVEN = "given in the platform file"

Positive = Annotated[float, Field(gt=0)]
LayerType = Literal["conv", "depthwise", "linear"]
NonNegative = Annotated[float, Field(ge=0)]


class Figure(Config):
    """A number and where it comes from."""

    value: float
    source: Annotated[str, Field(min_length=3)]


class FlagFigure(Config):
    value: bool
    source: Annotated[str, Field(min_length=3)]


class MediaFigure(Config):
    """Built-in media whose link power a device's measured power figures already include."""

    value: list[str]
    source: Annotated[str, Field(min_length=3)]


class DeviceProfile(Config):
    """A built-in device profile (``profiles.yaml``)."""

    description: str
    mac_rate: Figure
    memory_bytes: Figure
    active_power_w: Figure
    idle_power_w: Figure
    clock_hz: Figure
    has_aes: FlagFigure
    crypto_cycles_per_byte: dict[str, Figure]
    media_in_power: MediaFigure | None = None
    #: MAC/s for one type of layer (conv, depthwise, linear), where a source gives one;
    #: the others run at ``mac_rate``
    mac_rates: dict[LayerType, Figure] = {}
    #: fixed seconds per stage run, per message sent or received, per message sealed or
    #: opened (per algorithm), a message's wake-up latency per hop, and the coordinator's
    #: work per request, where measured (the calibrated ``host``); else none
    stage_s: Figure | None = None
    message_s: Figure | None = None
    hop_s: Figure | None = None
    coordinator_s: Figure | None = None
    crypto_fixed_s: dict[str, Figure] = {}
    #: MAC/s of int8 kernels (a stage of precision int8), where a source gives one; without
    #: it int8 stages run at the float rates
    int8_mac_rate: Figure | None = None


class MediumProfile(Config):
    """A built-in network medium (``profiles.yaml``)."""

    description: str
    bandwidth_bps: Figure
    latency_s: Figure
    tx_j_per_byte: Figure
    rx_j_per_byte: Figure
    loss: Figure
    shared: bool


class Profiles(Config):
    devices: dict[str, DeviceProfile]
    media: dict[str, MediumProfile]


class DeviceSpec(Config):
    """A device in a platform file: a profile, explicit figures, or both (figures override)."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    profile: str | None = None
    mac_rate: Positive | None = None
    memory_bytes: Positive | None = None
    active_power_w: NonNegative | None = None
    idle_power_w: NonNegative | None = None
    clock_hz: Positive | None = None
    has_aes: bool | None = None
    crypto_cycles_per_byte: dict[str, Positive] | None = None
    mac_rates: dict[LayerType, Positive] | None = None  # MAC/s per layer type
    int8_mac_rate: Positive | None = None  # MAC/s of int8 kernels
    #: built-in media whose link power this device's power figures already include: no
    #: radio energy per byte is charged on them (it would be counted twice)
    media_in_power: list[str] | None = None


class MediumSpec(Config):
    """Explicit medium figures, or a built-in medium with overrides."""

    profile: str | None = None
    bandwidth_bps: Positive | None = None
    latency_s: NonNegative | None = None
    tx_j_per_byte: NonNegative | None = None
    rx_j_per_byte: NonNegative | None = None
    loss: Annotated[float, Field(ge=0, lt=1)] | None = None
    shared: bool | None = None


class LinkSpec(Config):
    """Overrides for the link between two devices (both directions)."""

    a: str
    b: str
    bandwidth_bps: Positive | None = None
    latency_s: NonNegative | None = None
    loss: Annotated[float, Field(ge=0, lt=1)] | None = None


class PlatformSpec(Config):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    medium: MediumSpec  # in YAML: a built-in medium's name, or a mapping of figures
    devices: Annotated[list[DeviceSpec], Field(min_length=1)]
    links: list[LinkSpec] = []

    @field_validator("medium", mode="before")
    @classmethod
    def _medium_by_name(cls, value: Any) -> Any:
        return {"profile": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _names(self) -> PlatformSpec:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names must be unique, repeated: {', '.join(dupes)}")
        for i, link in enumerate(self.links):
            for end in (link.a, link.b):
                if end not in names:
                    raise ValueError(f"links.{i}: unknown device {end!r}")
        return self


@dataclass(frozen=True)
class Device:
    """A resolved device: plain numbers, and the source of each."""

    name: str
    profile: str | None
    mac_rate: float
    memory_bytes: float
    active_power_w: float
    idle_power_w: float
    clock_hz: float
    has_aes: bool
    crypto_cycles_per_byte: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    media_in_power: frozenset[str] = frozenset()
    #: per layer type, its MAC rate over ``mac_rate`` (so a device slowed down later, a
    #: straggler's, keeps its per-type rates in proportion)
    layer_speed: dict[str, float] = field(default_factory=dict, compare=False)
    stage_s: float = 0.0  # fixed seconds per stage run (a runtime's call into its executor)
    message_s: float = 0.0  # fixed seconds per message sent or received (framing, sockets)
    hop_s: float = 0.0  # a message's latency in software per hop (wake-ups), beyond the link
    coordinator_s: float = 0.0  # a coordinator on this device: its work per request
    crypto_fixed_s: dict[str, float] = field(default_factory=dict, compare=False)
    #: int8 kernels' MAC rate over ``mac_rate`` (1.0: no int8 figure, int8 at float speed)
    int8_speed: float = field(default=1.0, compare=False)

    @property
    def int8_mac_rate(self) -> float:
        return self.mac_rate * self.int8_speed

    def rate_for(self, layer_type: str | None, precision: str = "fp32") -> float:
        """MAC/s for a layer of ``layer_type`` (``Node.layer_type``): its own rate where the
        device has one, else ``mac_rate``; an int8 layer's scaled by ``int8_speed``."""
        speed = self.int8_speed if precision == "int8" else 1.0
        return self.mac_rate * self.layer_speed.get(layer_type or "", 1.0) * speed

    def radio_j_per_byte(self, link: Link, send: bool) -> float:
        """Radio energy per byte this device sends (or receives) on ``link``: none on a
        built-in medium whose link power is already inside this device's measured power."""
        if link.medium and link.medium in self.media_in_power:
            return 0.0
        return link.tx_j_per_byte if send else link.rx_j_per_byte

    def crypto_cycles(self, algorithm: str) -> float:
        """Cycles per byte to seal or open with ``algorithm``; ``ConfigError`` without a figure."""
        cpb = self.crypto_cycles_per_byte.get(algorithm)
        if cpb is None:
            raise ConfigError(f"device {self.name}: no crypto figure for {algorithm!r}")
        return cpb

    def crypto_seconds(self, algorithm: str, nbytes: float) -> float:
        """Time to seal or open ``nbytes`` with ``algorithm`` on this device."""
        if algorithm == "none" or nbytes == 0:
            return 0.0
        return (nbytes * self.crypto_cycles(algorithm) / self.clock_hz
                + self.crypto_fixed_s.get(algorithm, 0.0))


@dataclass(frozen=True)
class Link:
    bandwidth_bps: float
    latency_s: float
    loss: float
    tx_j_per_byte: float
    rx_j_per_byte: float
    shared: bool
    medium: str = ""  # the built-in medium whose per-byte energy figures these are, if any

    def seconds(self, nbytes: float) -> float:
        """Time for ``nbytes`` to cross the link (latency + serialisation)."""
        return 0.0 if nbytes == 0 else self.latency_s + 8 * nbytes / self.bandwidth_bps


LOCAL = Link(float("inf"), 0.0, 0.0, 0.0, 0.0, False)  # two stages on one device


@dataclass(frozen=True)
class Platform:
    name: str
    description: str
    devices: dict[str, Device]
    medium: Link
    medium_sources: dict[str, str]
    overrides: dict[frozenset[str], Link]
    source: str  # built-in name or file path

    def link(self, a: str, b: str) -> Link:
        """The link between devices ``a`` and ``b`` ("source"/"sink" use the medium)."""
        if a == b:
            return LOCAL
        return self.overrides.get(frozenset((a, b)), self.medium)

    @property
    def names(self) -> list[str]:
        return list(self.devices)

    def subset(self, names: list[str]) -> Platform:
        """The same platform with only ``names`` (planners then use only those)."""
        return replace(self, devices={n: self.devices[n] for n in names})


@lru_cache(maxsize=1)
def profiles() -> Profiles:
    return load_yaml(Profiles, HERE / "profiles.yaml")


_DEVICE_FIELDS = ("mac_rate", "memory_bytes", "active_power_w", "idle_power_w", "clock_hz")


def _resolve_device(spec: DeviceSpec, where: str) -> Device:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    crypto: dict[str, float] = {}
    if spec.profile == "host":
        from .host import host_profile
        base: DeviceProfile | None = host_profile()
    elif spec.profile is not None:
        base = profiles().devices.get(spec.profile)
        if base is None:
            known = ", ".join([*profiles().devices, "host"])
            raise ConfigError(f"{where}: unknown profile {spec.profile!r} (known: {known})")
    else:
        base = None
    if base is not None:
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
