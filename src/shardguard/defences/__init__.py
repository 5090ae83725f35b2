"""Defences (M1–M7): sealed links, votes and Freivalds checks, range guards, failover,
degradation and failout, weight digests; by name for campaigns in ``catalogue.py``."""
