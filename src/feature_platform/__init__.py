"""The platform around one Feast feature repository."""
