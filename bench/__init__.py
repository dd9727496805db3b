"""Benchmarks that print figures (value, unit, ratio against a baseline measured in the same run)."""
