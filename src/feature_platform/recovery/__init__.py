"""Recovery: backups of the registry database and their restore."""
