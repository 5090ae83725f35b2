"""Platforms: devices, links and their sourced figures (the cost model that prices a plan on
one is ``partition/cost.py``).

    p = load_platform("rpi4x4-ethernet")
    p.devices["pi1"].mac_rate, p.devices["pi1"].sources["mac_rate"]
"""

from ._model import Device, Link, Platform, PlatformSpec
from ._resolve import builtin_platforms, load_platform, profiles

__all__ = ["Device", "Link", "Platform", "PlatformSpec", "builtin_platforms", "load_platform",
           "profiles"]
