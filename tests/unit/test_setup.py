"""The README's set-up gives a working machine: the system packages genppl uses outside
Python (Graphviz's ``dot``, Debian's fortunes-ru) are there after ``make test``'s set-up.

Where the set-up can install them itself (Debian/Ubuntu as root or with password-less sudo,
and always in CI) their absence fails here, so a set-up that forgot one cannot pass by
skipping the tests that need it; elsewhere the set-up only names the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "system-packages"


def _can_install() -> bool:
    if os.environ.get("CI"):
        return True
    if shutil.which("apt-get") is None:
        return False
    if os.geteuid() == 0:
        return True
    sudo = shutil.which("sudo")
    return sudo is not None and subprocess.run([sudo, "-n", "true"],
                                               capture_output=True).returncode == 0


def test_system_packages_are_installed_by_the_set_up() -> None:
    check = subprocess.run(["sh", str(SCRIPT), "--check"], capture_output=True, text=True)
    if check.returncode != 0 and not _can_install():
        pytest.skip(f"this machine's set-up cannot install them itself: {check.stdout.strip()}")
    assert check.returncode == 0, check.stdout


def test_the_set_up_says_what_to_run_when_it_cannot_install(tmp_path: Path) -> None:
    """No package manager on PATH and nothing installed: one line naming the packages and
    exit 0 (the rest of genppl works without them), never a failed ``make``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sed", "id", "echo"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    run = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True,
                         env={"PATH": str(bin_dir)})
    assert run.returncode == 0, run.stderr
    if Path("/usr/share/games/fortunes/ru").is_dir():
        assert run.stdout.strip() == ("genppl set-up: missing graphviz; install them with your "
                                      "system's package manager (Debian names: graphviz)")
    else:
        assert "graphviz fortunes-ru" in run.stdout
    assert len(run.stdout.strip().splitlines()) == 1
