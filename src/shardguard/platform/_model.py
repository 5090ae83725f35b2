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
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .._config import Config
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
