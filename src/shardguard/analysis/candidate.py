"""One candidate of a design-space exploration (``explore.py``): what it deploys and its
journal key; and the guard placements a candidate chooses from.

    Candidate("pipeline", ("pi1", "pi2"), (5,), ("mac:blake2b",), 1, "activations")

``guard`` is where range guards run: ``none``, or a placement of the defence
``guard:PLACEMENT`` (``links``, ``activations``, ``both``). Before placements it was a
boolean (on links, or none); journals and spec files with booleans still read, and those
candidates keep the keys they were journaled under.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

GUARDS = ("none", "links", "activations", "both")  # none, or the placements of guard:…
INSIDE = ("activations", "both")  # placements that clip inside the stages


def _placement(value: Any) -> Any:
    """A guard placement; the old booleans mean on links (True) or none (False)."""
    if isinstance(value, bool):
        return "links" if value else "none"
    if value not in GUARDS:
        raise PydanticCustomError("guard_placement", "unknown guard placement {value} "
                                  "(none, links, activations or both; true/false: links/none)",
                                  {"value": repr(value)})
    return value


GuardChoice = Annotated[Literal["none", "links", "activations", "both"],
                        BeforeValidator(_placement)]


@dataclass(frozen=True)
class Candidate:
    """A deployment: partition, link protections, copies, guards, precisions."""

    strategy: str
    devices: tuple[str, ...]  # in stage order (pipeline); the set used (spatial, channel)
    cuts: tuple[int, ...]  # pipeline: stage k covers compute nodes (cuts[k-1], cuts[k]]
    protection: tuple[str, ...]  # link i between stages gets protection[i % len]
    copies: int
    guard: str  # range guards: none, links, activations or both (a bool: links or none)
    ends: str = "none"  # the coordinator's hops: input>first stages, last stages>output
    #: stage k computes in precision[k % len]; () is fp32 everywhere
    precision: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "guard", _placement(self.guard))  # journals hold booleans

    @property
    def key(self) -> str:
        fields: dict[str, Any] = asdict(self)
        if not self.precision:  # fp32 everywhere: the key it had before precision existed
            del fields["precision"]
        if self.guard in ("none", "links"):  # the keys of the boolean guards before placements
            fields["guard"] = self.guard == "links"
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]

    def describe(self) -> str:
        extra = (", int8" if set(self.precision) == {"int8"} else
                 f", stages {'/'.join(self.precision)}" if self.precision else "")
        extra += (f", vote:{self.copies}" if self.copies > 1 else "") + (
            f", guard:{self.guard}" if self.guard != "none" else "") + (
            f", ends {self.ends}" if self.ends != "none" else "")
        if len(self.devices) == 1:
            return f"whole model on {self.devices[0]}{extra}"
        layout = " → ".join(self.devices) if self.strategy == "pipeline" else "+".join(
            self.devices)
        prot = ",".join(sorted(set(self.protection)))
        return f"{self.strategy} {layout}, links {prot}{extra}"


