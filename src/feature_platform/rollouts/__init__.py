"""Rollouts of the feature repository: plan, classify, apply under a lock, log."""
