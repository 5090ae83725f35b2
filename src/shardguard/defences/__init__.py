"""Defences (M1–M7): sealed links so far; see DESIGN.md's catalogue."""
