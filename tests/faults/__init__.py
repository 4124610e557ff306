"""Fault tests: kills, swaps, shutdowns, full disks and restarts against the real services."""
