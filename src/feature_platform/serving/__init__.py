"""The feature server: Feast's HTTP app behind the platform's front door."""
