#!/usr/bin/env bash
# CI helper: plan ENV and hand the summary and exit code to the next steps as outputs
# (markdown, exit-code). Always exits 0 so that the comment is posted; the workflow's
# verdict decides from exit-code.
set -uo pipefail
env_name="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${RUNNER_TEMP:-/tmp}/plan-$env_name.md"
bash "$root/ci/plan.sh" "$env_name" --json "${out%.md}.json" --markdown "$out" >/dev/null
code=$?
[ -s "$out" ] || printf '### `%s`: plan failed (exit %s)\n\nSee the job log.\n' "$env_name" "$code" >"$out"
delimiter="plan_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
{
  echo "exit-code=$code"
  echo "markdown<<$delimiter"
  cat "$out"
  echo "$delimiter"
} >>"${GITHUB_OUTPUT:?GITHUB_OUTPUT is set by the CI system}"
exit 0
