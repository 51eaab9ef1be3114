"""``sitefusion site`` with real processes (issue 31, classes 4 and 8): a bad work folder or a
SuperLink that nothing answers fails at once or within the connect deadline, and stopping the
site stops every process it started, also one that ignores SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sitefusion.federated import SiteSetup
from sitefusion.federated.deploy import (
    descendants,
    flower_env,
    free_port,
    start_process,
    superlink_command,
)

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc"),
    pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="flwr is not installed"),
]
ROOT = Path(__file__).resolve().parents[2]


def site(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from sitefusion.cli.main import main; main()", "site", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # so that the test can clean up after the old behaviour
    )


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[int | None, str, float]:
    """Exit code (None: still running after ``timeout``, then killed), output, seconds."""
    t0 = time.monotonic()
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output, time.monotonic() - t0
    return process.returncode, output, time.monotonic() - t0


def site_args(setup: SiteSetup, superlink: str, workdir: Path) -> list[str]:
    return [
        "--superlink",
        superlink,
        "--site",
        setup.site,
        "--manifest",
        str(setup.manifest),
        "--workdir",
        str(workdir),
        "--root",
        str(setup.root),
        "--port",
        str(free_port()),
    ]


def _gone(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] == "Z"


def test_a_workdir_that_is_a_file_is_refused_at_once(
    site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    workdir = tmp_path / "a_file"
    workdir.write_text("x")
    code, output, took = finish(
        site(*site_args(site_setups[0], f"127.0.0.1:{free_port()}", workdir)), timeout=60
    )
    assert code == 1, output
    assert str(workdir) in " ".join(output.split()) and "Traceback" not in output
    assert took < 30


def test_an_unreachable_superlink_fails_within_the_connect_deadline(
    site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    args = [*site_args(site_setups[0], address, tmp_path / "work"), "--connect-timeout", "3"]
    code, output, took = finish(site(*args), timeout=90)
    flat = " ".join(output.split())
    assert code == 1, output
    assert address in flat and "unreachable" in flat and "Traceback" not in output
    assert took < 60


def test_sigterm_to_a_site_stops_everything_it_started(
    site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    port = free_port()
    link = start_process(
        "SuperLink",
        superlink_command(port),
        port,
        tmp_path / "superlink.log",
        flower_env(tmp_path / "flwr_home"),
    )
    try:
        process = site(*site_args(site_setups[0], f"127.0.0.1:{port}", tmp_path / "work"))
        deadline = time.monotonic() + 90
        started: list[int] = []
        while time.monotonic() < deadline:  # the SuperNode and its SuperExec
            started = descendants(process.pid)
            if len(started) >= 2:
                break
            time.sleep(0.5)
        assert started, "the site started no process"
        time.sleep(2)
        started = descendants(process.pid)
        os.kill(process.pid, signal.SIGTERM)
        code, _, _ = finish(process, timeout=60)
        time.sleep(0.5)
        left = [p for p in started if not _gone(p)]
        for pid in left:  # do not leave them behind on the old behaviour
            os.kill(pid, signal.SIGKILL)
        assert code is not None
        assert not left, f"still running after the site stopped: {left}"
    finally:
        link.stop(grace=5)


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
    start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_stopping_ends_children_that_ignore_sigterm_after_the_grace(tmp_path: Path) -> None:
    from sitefusion.federated.site_process import SiteProcess

    process = SiteProcess.start([sys.executable, "-c", STUBBORN], dict(os.environ))
    deadline = time.monotonic() + 30
    while len(descendants(process.popen.pid)) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    spawned = [process.popen.pid, *descendants(process.popen.pid)]
    t0 = time.monotonic()
    process.stop(grace=1.0)
    assert time.monotonic() - t0 < 20
    assert all(_gone(pid) for pid in spawned)
