"""Feast's own registry and offline servers, run read-only for clients without credentials."""
