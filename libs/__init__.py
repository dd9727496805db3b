"""Shared plumbing of every Loom service."""
