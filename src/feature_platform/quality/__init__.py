"""Data quality: the views' expectations (`expectations.py`, checked with pandera) and
the quarantine table of rows set aside for breaking them (`quarantine.py`)."""
