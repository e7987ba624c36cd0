#!/usr/bin/env bash
# The Feast seam tests (tests/unit/feast_seam) against another Feast release, in a
# virtualenv of its own (.venv-feast-VERSION): the project's runtime dependencies with
# feast at VERSION, pytest and hypothesis. .venv is left as it is. Prints one line per
# seam, kept or broken and why. Exit: 0 every seam kept, 1 a seam broke, 2 usage.
set -euo pipefail
if [ "$#" -ne 1 ]; then
  echo "usage: ci/feast-candidate.sh FEAST_VERSION (e.g. 0.68.0)" >&2
  exit 2
fi
version="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-feast-$version"
cd "$root"

[ -x "$venv/bin/python" ] || uv venv --quiet --python 3.11 "$venv"
# pyproject's [project] dependencies, the feast requirement moved to the candidate
requirements="$("$venv/bin/python" - "$version" <<'PY'
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
for requirement in dependencies:
    if re.match(r"feast\b", requirement):
        requirement = re.sub(r"[=<>~!].*$", f"=={sys.argv[1]}", requirement)
    print(requirement)
PY
)"
mapfile -t requirement_list <<<"$requirements"
uv pip install --quiet --python "$venv/bin/python" "${requirement_list[@]}" \
  "pytest>=8,<9" "hypothesis>=6.100"
echo "feast $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("feast"))') in $venv"

# The project from this checkout, not installed anywhere.
FEAST_SEAM_SUMMARY=all PYTHONPATH="$root/src" "$venv/bin/python" -m pytest \
  tests/unit/feast_seam -p no:cacheprovider -q --tb=line -rN
