"""A server that stops before it is ready is reported with the end of its log."""

import subprocess
import sys
from pathlib import Path

from feature_platform.devtools.launcher import exited


def test_a_failed_start_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    script = "import sys\nfor n in range(30): print(f'line {n}')\nsys.exit('cannot listen')"
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log)
        process.wait()
        message = str(exited("registry server", process, log))
    assert message.startswith("registry server exited with code 1; the end of its log:")
    assert "cannot listen" in message
    assert "line 29" in message
    assert "line 5\n" not in message  # only the end


def test_a_server_without_a_log_file_is_reported_by_its_code() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    assert str(exited("feature server", process, None)) == "feature server exited with code 3"
