"""Checks on what the platform serves: the skew check."""
