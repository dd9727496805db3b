"""The batch service."""
