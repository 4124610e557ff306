"""Smoke tests of the benchmark scripts (quick modes; they never judge wall-clock figures)."""
