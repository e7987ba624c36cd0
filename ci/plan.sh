#!/usr/bin/env bash
# Plan the feature repository against ENV, as CI, `make plan` and people run it.
# Settings: ci/env/ENV.env, then the process environment (secrets from the CI system).
# Prints a markdown summary on stdout; `--json PATH` / `--markdown PATH` also write files.
# Exit: 0 no change or safe only, 3 breaking change present, 2 configuration error, 1 other.
# Plan never writes to the registry.
set -euo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: ci/plan.sh ENV [--json PATH] [--markdown PATH]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "${FEATURE_PLATFORM:-$root/.venv/bin/feature-platform}" plan "$@"
