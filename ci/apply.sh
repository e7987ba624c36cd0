#!/usr/bin/env bash
# Apply the feature repository to ENV, one apply per environment at a time.
# Takes the apply lock in ENV's registry database (waits APPLY_LOCK_TIMEOUT_SECONDS, default
# 600, or `--lock-timeout S`), plans again under it, applies and records the outcome in the
# registry database's platform_apply_log. Breaking changes need ALLOW_BREAKING_CHANGES=true.
# Exit: 0 applied or nothing to do, 3 refused (breaking), 2 configuration error, 1 other:
# a failed apply (until the next one completed what it left undone) or giving up on the lock.
set -euo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: ci/apply.sh ENV [--json PATH] [--lock-timeout SECONDS]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "${FEATURE_PLATFORM:-$root/.venv/bin/feature-platform}" apply "$@"
