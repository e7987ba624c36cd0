"""`python -m feature_platform.config.feast_cli ...`: Feast's command line with the
platform's warning filters, set after Feast's import has put its own first."""

from feast.cli.cli import cli

from feature_platform.config.feast_commands import quiet_warnings

quiet_warnings()
cli(prog_name="feast")
