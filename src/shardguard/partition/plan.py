"""The Plan: which device computes which part of a model, saved as human-editable YAML.

A plan is a sequence of *segments*, contiguous runs of the model's graph in
topological order (``first`` .. ``last`` node). A segment is computed whole on
one device (``split: none``) or split across several: into spatial tiles of its
output (``spatial``, rows × cols) or into groups of output channels
(``channel``). Each piece is a *stage*, placed on a device, with optional
replicas on other devices. Tensors that cross a segment boundary travel on
*links* between stages; each link carries a protection setting::

    shardguard_plan: 1
    model: {ref: resnet-small, input_shape: [1, 28, 28]}
    platform: rpi4x4-ethernet
    strategy: pipeline
    objective: latency
    segments:
      - first: stem_0
        last: layers_2_relu_1
        split: none
        stages: [{name: s0, device: pi1}]
      - first: layers_3_conv1
        last: fc
        split: none
        stages: [{name: s1, device: pi2, replicas: [pi3]}]
    links:
      - {src: input, dst: s0, tensors: [x], bytes: 3136, protection: none}
      - {src: s0, dst: s1, tensors: [layers_2_relu_1], bytes: 12544, protection: none}
      - {src: s1, dst: output, tensors: [fc], bytes: 40, protection: none}

Which tensors a link carries is derived from the graph (``links`` records it
for people to read); ``protection`` is the part of ``links`` a person sets. The
coordinator's hops are links like any other: ``input>S`` carries the input to a
first stage, ``S>output`` a last stage's result (a plan file without them leaves
them unprotected).

File paths in a plan (a model file, weights, a class list, a platform file) are
relative to the plan's directory (``_paths.py``), so a plan copied elsewhere with
them still works; in memory, after ``load_plan``, they are absolute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator, model_validator

from .._config import Config, dump_yaml, read_yaml, validate
from .._paths import Kind, located, relocated
from ..data.preprocess import Preprocess
from ..errors import ConfigError
from ..protections import CATALOGUE

PLAN_VERSION: Final = 1
Split = Literal["none", "spatial", "channel"]
Strategy = Literal["pipeline", "spatial", "channel", "auto", "manual"]
Objective = Literal["latency", "throughput", "energy", "energy-total"]
Span = Annotated[list[int], Field(min_length=2, max_length=2)]


class ModelRef(Config):
    """What model the plan partitions."""

    ref: str  # zoo name, path/to/file.py:factory, or .onnx file
    weights: str | None = None  # state-dict file; None: the shipped checkpoint, if any
    input_shape: list[int]  # C, H, W of one sample
    preprocess: Preprocess | None = None  # images → input; None: the zoo's, else for_input
    classes: str | None = None  # class-list file (image folders' labels); None: the zoo's


class StageSpec(Config):
    """One piece of a segment on one device."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    device: str
    replicas: list[str] = []  # devices holding a copy (failover, voting)
    rows: Span | None = None  # spatial: output rows [start, stop) of the segment's last node
    cols: Span | None = None  # spatial: output columns [start, stop)
    channels: Span | None = None  # channel: output channels [start, stop)
    precision: Literal["fp32", "int8"] = "fp32"


class SegmentSpec(Config):
    first: str  # first node (topological order) computed by this segment
    last: str  # last node computed by this segment
    split: Split = "none"
    stages: Annotated[list[StageSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _pieces(self) -> SegmentSpec:
        for st in self.stages:
            spatial = st.rows is not None or st.cols is not None
            if self.split != "spatial" and spatial:
                raise ValueError(f"stage {st.name}: rows/cols only apply to spatial segments")
            if self.split != "channel" and st.channels is not None:
                raise ValueError(f"stage {st.name}: channels only apply to channel segments")
            if self.split == "spatial" and (st.rows is None or st.cols is None):
                raise ValueError(f"stage {st.name}: a spatial stage needs rows and cols")
            if self.split == "channel" and st.channels is None:
                raise ValueError(f"stage {st.name}: a channel stage needs channels")
            for span in (st.rows, st.cols, st.channels):
                if span is not None and not 0 <= span[0] < span[1]:
                    raise ValueError(f"stage {st.name}: empty or negative span {span}")
        if self.split == "none" and len(self.stages) != 1:
            raise ValueError("a segment with split: none has exactly one stage")
        return self


Protection = str  # "none", "mac:hmac-sha256", "aead:aes-128-gcm", ... (see defences)


class LinkSpec(Config):
    src: str  # stage name, or "input"
    dst: str  # stage name, or "output"
    tensors: list[str] = []  # graph nodes whose outputs (or pieces of them) cross this link
    bytes: int = 0  # per sample
    protection: Protection = "none"

    @field_validator("protection")
    @classmethod
    def _known(cls, value: str) -> str:
        if value != "none" and value not in CATALOGUE:  # every name, installed or not
            raise ValueError(f"unknown protection {value!r} (known: none, "
                             f"{', '.join(CATALOGUE)})")
        return value


class Plan(Config):
    """A partitioning of one model onto one platform."""

    shardguard_plan: Literal[1] = PLAN_VERSION
    model: ModelRef
    platform: str  # built-in platform name or platform file
    strategy: Strategy = "manual"
    objective: Objective = "latency"
    segments: Annotated[list[SegmentSpec], Field(min_length=1)]
    links: list[LinkSpec] = []

    @model_validator(mode="after")
    def _unique(self) -> Plan:
        names = [st.name for seg in self.segments for st in seg.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique, repeated: {', '.join(dupes)}")
        for st in self.stages:
            if st.device in st.replicas:
                raise ValueError(f"stage {st.name}: replica on its own device {st.device}")
        return self

    @property
    def stages(self) -> list[StageSpec]:
        return [st for seg in self.segments for st in seg.stages]

    def stage(self, name: str) -> StageSpec:
        for st in self.stages:
            if st.name == name:
                return st
        raise ConfigError(f"plan has no stage {name!r}")

    def devices_used(self) -> list[str]:
        seen: dict[str, None] = {}
        for st in self.stages:
            seen[st.device] = None
            for r in st.replicas:
                seen[r] = None
        return list(seen)

    def protection(self, src: str, dst: str) -> Protection:
        for link in self.links:
            if link.src == src and link.dst == dst:
                return link.protection
        return "none"

    def with_protection(self, protection: Protection) -> Plan:
        """A copy of this plan with ``protection`` on every link, the coordinator's too."""
        plan = self.model_copy(deep=True)
        for link in plan.links:
            link.protection = protection
        return plan

    def to_yaml(self, base: Path | None = None) -> str:
        """The plan as YAML; with ``base``, its file paths relative to that directory."""
        if base is None:
            return dump_yaml(self)
        data = relocated(self.model_dump(mode="json"), base, PATHS)
        return dump_yaml(Plan.model_validate(data))

    def save(self, path: Path, *, force: bool = False) -> None:
        """Write the plan to ``path``, its file paths relative to the plan's directory."""
        if path.exists() and not force:
            raise ConfigError(f"{path}: already exists (use --force to overwrite)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml(path.parent))


#: The fields of a plan that hold file paths, and what kind of reference each is.
PATHS: dict[str, Kind] = {"model.ref": "model", "model.weights": "path",
                          "model.classes": "path", "platform": "platform"}


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file's structure (``bind`` checks it against model and
    platform); its file paths, relative to the plan's directory, become absolute."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict):
        data = located(data, path.parent, PATHS)
    return validate(Plan, data, str(path))
