"""Threat specifications: the catalogue (D1–D5 on devices, L1–L6 on links).

In YAML, a list under ``threats``; each entry names its ``id``, its ``target`` (a
device name, a link ``SRC>DST`` between stages, or ``every``) and its parameters::

    threats:
      - {id: D1, target: pi2}                                   # crash
      - {id: L1, target: s0>s1, ber: 1.0e-5, bits: exponent}    # bit flips in transit
      - {id: L2, target: every, snr_db: 20}                     # Gaussian noise
      - {id: L5, target: s1>s2, method: pgd, epsilon: 0.05, steps: 10}
      - {id: L6, target: s0>s1, max_epochs: 20}                 # eavesdropper, converged

All randomness comes from ``seed``: a trial is reproducible from its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from .._config import Config, read_yaml, validate
from ..errors import ConfigError
from .bits import bit_positions

Target = Annotated[str, Field(min_length=1)]
Probability = Annotated[float, Field(ge=0, le=1)]


def _known_bits(value: str | int | list[int]) -> str | int | list[int]:
    bit_positions(value, "any")  # raises ValueError naming what is wrong
    return value


#: a bit class (float32: "sign", "exponent", "exponent-high", "mantissa", ...; int8: "sign",
#: "msb", "lsb", "all"), a position or positions (0..31; 0..7 on int8 tensors)
Bits = Annotated[str | int | list[int], AfterValidator(_known_bits)]


class _Threat(Config):
    target: Target = "every"
    seed: int = 0

    @property
    def on_link(self) -> bool:
        return self.id.startswith("L")  # type: ignore[attr-defined, no-any-return]


class Crash(_Threat):
    """D1: the device stops for good (SIGKILL of its worker)."""

    id: Literal["D1"] = "D1"


class Outage(_Threat):
    """D2: the device stops for ``seconds``, then resumes (SIGSTOP / SIGCONT)."""

    id: Literal["D2"] = "D2"
    seconds: Annotated[float, Field(gt=0)] = 1.0
    start_s: Annotated[float, Field(ge=0)] = 0.0  # when, from the start of the stream


class Straggler(_Threat):
    """D3: the device computes ``factor``× slower."""

    id: Literal["D3"] = "D3"
    factor: Annotated[float, Field(ge=1)] = 4.0


class Compromised(_Threat):
    """D4: the device sends wrong outputs."""

    id: Literal["D4"] = "D4"
    mode: Literal["random", "zero", "scale", "sign", "adversarial"] = "random"
    factor: float = 10.0  # for mode: scale


class WeightFlips(_Threat):
    """D5: bit flips in a device's stored weights (float32 bits, or int8 bits of an int8
    stage's quantized weights: ``quantized.flip_int8_initializers``)."""

    id: Literal["D5"] = "D5"
    ber: Probability = 1e-6
    bits: Bits = "all"


class BitFlips(_Threat):
    """L1: bits flip in transit, at a bit-error rate over chosen bit positions (of float32
    values, or of int8 ones on a link out of an int8 stage).

    With ``elements``, the flips are chosen instead: every bit in ``bits`` of each
    listed element (flat index within one sample's tensor) flips, in every message.
    """

    id: Literal["L1"] = "L1"
    ber: Probability = 1e-6
    bits: Bits = "all"
    elements: list[Annotated[int, Field(ge=0)]] | None = None


class Noise(_Threat):
    """L2: additive Gaussian noise at a signal-to-noise ratio (dB, per tensor)."""

    id: Literal["L2"] = "L2"
    snr_db: float = 20.0


class Erasure(_Threat):
    """L3: zeroed elements, zeroed channels, or whole messages dropped, at ``rate``.

    With ``channels`` (mode channels), exactly those channels are zeroed in every message.
    """

    id: Literal["L3"] = "L3"
    mode: Literal["elements", "channels", "message"] = "elements"
    rate: Probability = 0.1
    channels: list[Annotated[int, Field(ge=0)]] | None = None


class Replay(_Threat):
    """L4: a message is replaced by the same link's message from an earlier request."""

    id: Literal["L4"] = "L4"
    rate: Probability = 1.0
    lag: Annotated[int, Field(ge=1)] = 1


class Adversarial(_Threat):
    """L5: FGSM or PGD perturbation of the tensor in an ε-ball relative to its range.

    White-box on the downstream stages; untargeted, or towards ``target_class``.
    """

    id: Literal["L5"] = "L5"
    method: Literal["fgsm", "pgd"] = "fgsm"
    epsilon: Annotated[float, Field(ge=0)] = 0.05
    steps: Annotated[int, Field(ge=1)] = 10
    target_class: int | None = None


#: the eavesdropper's known inputs by default (at 28×28; proportionally fewer for larger ones)
EAVESDROP_IMAGES = 4000


class DecoderTraining(Config):
    """How long an eavesdropper's decoder trains (L6), in ``analyze`` and in campaigns alike.

    By default to convergence: a ``holdout`` share of its images is set aside, and training
    stops when their PSNR has not risen by ``min_gain_db`` for ``patience`` epochs, or after
    ``max_epochs``. ``patience: null`` asks for a fixed budget instead: exactly
    ``max_epochs`` epochs on every image, nothing held out.
    """

    max_epochs: Annotated[int, Field(ge=1)] = 40  # the limit; with patience null, the budget
    patience: Annotated[int, Field(ge=1)] | None = 2  # epochs without a gain before it stops
    min_gain_db: Annotated[float, Field(ge=0)] = 0.1  # held-out PSNR rise that counts
    holdout: Annotated[float, Field(gt=0, lt=1)] = 0.1  # share of the images held out


class Eavesdrop(_Threat, DecoderTraining):
    """L6: train a decoder that reconstructs the input from the tensor on a link.

    It knows ``train_samples`` training images and trains as ``DecoderTraining`` says:
    to convergence on a held-out tenth, at most ``max_epochs`` (40) epochs; with
    ``patience: null``, exactly ``max_epochs``. ``epochs``, as older campaign files write
    it, is read as ``max_epochs``: ``epochs: 3`` trains at most three epochs and stops
    sooner if the held-out PSNR stops rising; add ``patience: null`` for exactly three,
    on every image, as those files used to mean.
    """

    id: Literal["L6"] = "L6"
    train_samples: Annotated[int, Field(ge=100)] = EAVESDROP_IMAGES

    @model_validator(mode="before")
    @classmethod
    def _epochs_is_max_epochs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "epochs" in data:
            if "max_epochs" in data:
                raise ValueError("give max_epochs or epochs (its older name), not both")
            data = {("max_epochs" if k == "epochs" else k): v for k, v in data.items()}
        return data


Threat = Annotated[Crash | Outage | Straggler | Compromised | WeightFlips | BitFlips | Noise
                   | Erasure | Replay | Adversarial | Eavesdrop, Field(discriminator="id")]

DEVICE_THREATS = ("D1", "D2", "D3", "D4", "D5")
LINK_THREATS = ("L1", "L2", "L3", "L4", "L5", "L6")


class ThreatFile(Config):
    threats: list[Threat]


def simulation_only(threat: Threat) -> bool:
    """Whether ``threat`` can only act in the local executor: D5 changes stored weights,
    L5 and D4 adversarial need gradients, L6 trains a decoder."""
    return isinstance(threat, (WeightFlips, Adversarial, Eavesdrop)) or (
        isinstance(threat, Compromised) and threat.mode == "adversarial")


def check_int8(threat: Threat, where: str, why: str = "int8 stages are a choice here") -> None:
    """A ConfigError naming ``where`` when ``threat`` flips bits an int8 value does not have
    (a float32 class such as ``exponent``, or a position above 7)."""
    bits = getattr(threat, "bits", None)
    if bits is None:
        return
    try:
        bit_positions(bits, "int8")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc} ({why})") from exc


def parse_threat(data: object, source: str = "threat") -> Threat:
    """One threat from a mapping (as in YAML); errors name the field."""
    return validate(ThreatFile, {"threats": [data]}, source).threats[0]


def load_threats(path: str | Path) -> list[Threat]:
    return validate(ThreatFile, read_yaml(Path(path)), str(path)).threats
