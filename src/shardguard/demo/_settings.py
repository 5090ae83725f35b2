"""What the demo runs on, and how many images each of its steps uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEMO_MODEL = "resnet-small"
DEMO_PLATFORM = "rpi4x4-ethernet"
DEMO_PROTECTION = "aead:chacha20-poly1305"


@dataclass(frozen=True)
class DemoSizes:
    """How many images (and candidates) each step of the demo uses."""

    evaluate: int | None  # test images evaluated (None: all of them)
    check: int | None  # images the partitioned model is checked on (None: all of them)
    distributed: int  # images run on the workers
    analysis: int  # images per trial of the vulnerability analysis
    defence: int  # images attacked, then defended
    explore_budget: int  # candidates NSGA-II evaluates
    explore_images: int  # held-out images per candidate
    eavesdrop_images: int  # images the analysis's eavesdropper trains on (at 28×28)
    eavesdrop_epochs: int  # its most epochs (it stops sooner once the held-out PSNR does)


#: The 28×28 demo model: a few minutes on a 2-core laptop (the analysis and the defence
#: use enough images that every interval in the summary is under ±2 points).
SMALL = DemoSizes(evaluate=None, check=None, distributed=2000, analysis=1000, defence=2500,
                  explore_budget=60, explore_images=100, eavesdrop_images=2000,
                  eavesdrop_epochs=4)
#: ImageNet-size inputs (224×224): one image costs what a few hundred 28×28 ones do, so
#: every step uses fewer, and the analysis stays at the 200 images the issue asks for.
LARGE = DemoSizes(evaluate=1000, check=200, distributed=200, analysis=200, defence=100,
                  explore_budget=12, explore_images=50, eavesdrop_images=2000,
                  eavesdrop_epochs=4)


#: Where the demo plans a large model unless told: boards too small for the whole of it.
LARGE_PLATFORM = "rpi4x4-12mb"


def sizes_for(input_shape: tuple[int, ...]) -> DemoSizes:
    """``LARGE`` for inputs of more than 3×64×64 values, else ``SMALL``."""
    return LARGE if int(np.prod(input_shape)) > 3 * 64 * 64 else SMALL


EXPLORE_THREATS = [{"id": "L1", "target": "links", "ber": 1e-3, "bits": "exponent-high"},
                   {"id": "L4", "target": "links", "rate": 0.3}]
