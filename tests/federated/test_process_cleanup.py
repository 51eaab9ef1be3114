"""Stopping a Flower process ends everything it started, also a descendant that left the
process group (Flower's SuperLink starts its ServerApp process that way; one outlived a stopped
federation)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from sitefusion.federated.deploy import descendants, start_process

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

PARENT = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
)
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] == "Z"


def test_stop_ends_a_descendant_in_a_session_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    process = start_process("parent", [sys.executable, "-c", PARENT], 0, log, dict(os.environ))
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(log.read_text().split()[0])
    assert os.getpgid(child) != os.getpgid(process.popen.pid)  # out of the group killpg reaches
    assert child in descendants(process.popen.pid)
    process.stop(grace=5)
    assert process.popen.poll() is not None
    assert _gone(child)
