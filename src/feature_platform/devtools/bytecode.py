"""`python -m feature_platform.devtools.bytecode`: compile the virtualenv's and the
package's bytecode once, with progress, so no process pays for it at start (about 18,000
files, most of a minute on two cores)."""

from __future__ import annotations

import compileall
import site
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from feature_platform.console import say

PACKAGE = Path(__file__).resolve().parents[1]
STEPS = 10


def _compile(path: Path) -> bool:
    # quiet=2: a file that is not Python 3 (a template, a test fixture) is skipped, as
    # uv's --compile-bytecode skips it.
    return bool(compileall.compile_file(path, quiet=2))


def main() -> None:
    roots = [Path(p) for p in site.getsitepackages()] + [PACKAGE]
    files = sorted({f for root in roots for f in root.rglob("*.py")})
    say(f"compiling bytecode: {len(files):,} files")
    with ProcessPoolExecutor() as pool:
        for done, _ in enumerate(pool.map(_compile, files, chunksize=100), start=1):
            if done * STEPS // len(files) > (done - 1) * STEPS // len(files):
                say(f"  {done * 100 // len(files)}% ({done:,} files)")


if __name__ == "__main__":
    main()
