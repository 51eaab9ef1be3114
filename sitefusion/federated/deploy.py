"""Flower processes: the SuperLink, one SuperNode per site, and ``flwr run`` of the sitefusion app.

Everything here starts real Flower processes (``flower-superlink``, ``flower-supernode``,
``flwr``) from the environment sitefusion runs in, with telemetry, update checks and the
SuperLink's runtime installation of app dependencies turned off (the network may be closed, and
the app needs nothing beyond sitefusion). Each process runs in its own process group so that the
ServerApp / ClientApp processes Flower spawns are stopped with it.

- :func:`superlink_command`, :func:`supernode_command`: the command lines ``sitefusion
  federate`` and ``sitefusion site`` run (TLS with certificate files, or ``--insecure``, which
  is only allowed on loopback addresses).
- :func:`app_folder`: a copy of the Flower app folder shipped in the package
  (``sitefusion/federated/app/pyproject.toml`` names sitefusion's ServerApp and ClientApp), which
  ``flwr run`` bundles.
- :func:`run_app`: ``flwr run`` against a SuperLink connection, streaming the coordinator's log,
  then the run's final status from ``flwr ls`` (``flwr run`` can exit 0 for a failed run).
- :class:`LocalFederation`: a SuperLink and SuperNodes on free loopback ports, for the demo and
  the tests; stops every process it started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Any

from sitefusion.errors import ConfigError, MissingDependencyError, SiteFusionError
from sitefusion.federated.setup import SiteSetup

__all__ = [
    "FlowerProcess",
    "LocalFederation",
    "RunOutcome",
    "TlsFiles",
    "app_folder",
    "descendants",
    "end_processes",
    "flower_env",
    "free_port",
    "run_app",
    "superlink_command",
    "supernode_command",
    "write_connection",
]


@dataclass(frozen=True)
class TlsFiles:
    """Certificate files: the SuperLink's certificate, key and CA (``ca`` alone on a site)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise MissingDependencyError(
            f"{name!r} not found: the federated commands need Flower; install it with "
            "pip install 'sitefusion[federated]'"
        )
    return found


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_security(address: str, tls: TlsFiles | None) -> None:
    if tls is None and not _is_loopback(address):
        raise ConfigError(
            f"{address}: insecure (plain-text) connections are only allowed on loopback "
            "addresses; give certificate files for anything else (docs/architecture.md, Deployment)"
        )


def flower_env(home: Path) -> dict[str, str]:
    """The environment for Flower's processes: their own ``FLWR_HOME``, no telemetry, no update
    check, sitefusion's interpreter first on ``PATH``."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def superlink_command(
    port: int, *, host: str = "127.0.0.1", tls: TlsFiles | None = None
) -> list[str]:
    """``flower-superlink`` serving its APIs on ``host:port``."""
    _check_security(f"{host}:{port}", tls)
    command = [
        _tool("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if tls is None:
        return [*command, "--insecure"]
    if tls.cert is None or tls.key is None:
        raise ConfigError("a SuperLink with TLS needs its certificate and key files")
    return [
        *command,
        "--ssl-ca-certfile",
        str(tls.ca),
        "--ssl-certfile",
        str(tls.cert),
        "--ssl-keyfile",
        str(tls.key),
    ]


def supernode_command(
    superlink: str, setup: SiteSetup, *, port: int, tls: TlsFiles | None = None
) -> list[str]:
    """``flower-supernode`` of one site, connected to ``superlink`` (``host:port``)."""
    _check_security(superlink, tls)
    command = [
        _tool("flower-supernode"),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        setup.node_config(),
        "--max-wait-time",
        "600",
    ]
    if tls is None:
        return [*command, "--insecure"]
    return [*command, "--root-certificates", str(tls.ca)]


def app_folder(dest: Path) -> Path:
    """A copy, at ``dest``, of the Flower app folder shipped with sitefusion (its
    ``pyproject.toml`` names the ServerApp and ClientApp); ``flwr run`` bundles the copy, so the
    installed package is never written to."""
    shutil.copytree(files("sitefusion.federated") / "app", dest, dirs_exist_ok=True)  # type: ignore[arg-type]
    return dest


def write_connection(home: Path, name: str, address: str, tls: TlsFiles | None = None) -> None:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection ``name`` (the default)."""
    _check_security(address, tls)
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{name}"',
        "",
        f"[superlink.{name}]",
        f'address = "{address}"',
    ]
    lines.append("insecure = true" if tls is None else f'root-certificates = "{tls.ca}"')
    (home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class FlowerProcess:
    """A started Flower process: what it is, its port and its log file."""

    name: str
    port: int
    log: Path
    popen: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """Stop the process and everything it spawned: its process group, and descendants
        that started sessions of their own (the SuperLink's ServerApp process does)."""
        if self.popen.poll() is not None:
            return
        spawned = descendants(self.popen.pid)
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)
        spawned += [p for p in descendants(self.popen.pid) if p not in spawned]
        end_processes(spawned, grace)


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, state)`` of a process from ``/proc``, or None where it is gone (or no
    ``/proc``: then nothing beyond the process group is found)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0]


def descendants(pid: int) -> list[int]:
    """Every living process descended from ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None and stat[1] != "Z":
                    children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z"


def end_processes(pids: Sequence[int], grace: float) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def start_process(
    name: str, command: Sequence[str], port: int, log: Path, env: dict[str, str]
) -> FlowerProcess:
    """Start ``command`` in its own process group, output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        popen = subprocess.Popen(
            list(command), stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return FlowerProcess(name, port, log, popen)


def _wait_listening(process: FlowerProcess, host: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            tail = process.log.read_text(errors="replace")[-800:]
            raise SiteFusionError(f"{process.name} exited at start ({process.log}):\n{tail}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, process.port)) == 0:
                return
        time.sleep(0.3)
    raise SiteFusionError(
        f"{process.name} did not listen on {host}:{process.port} within {timeout:.0f} s"
    )


@dataclass
class RunOutcome:
    """How a ``flwr run`` ended: Flower's run id and status (``finished:completed`` when good)."""

    run_id: str | None
    status: str
    returncode: int


def run_app(
    app: Path,
    connection: str,
    *,
    config: Path,
    out: Path,
    env: dict[str, str],
    timeout: float,
    on_line: Callable[[str], None] | None = None,
) -> RunOutcome:
    """``flwr run`` the sitefusion app with ``config`` into ``out`` and wait for its end.

    The coordinator's log is streamed to ``on_line``. Flower's own status of the run decides the
    outcome (``flwr run`` may exit 0 although the ServerApp raised).
    """
    flwr = _tool("flwr")
    run_config = f'config="{config}" out="{out}"'
    command = [flwr, "run", str(app), connection, "--run-config", run_config, "--stream"]
    popen = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        start_new_session=True,
    )
    run_id = None
    deadline = time.monotonic() + timeout
    lines: Iterable[str] = popen.stdout if popen.stdout is not None else ()
    for line in lines:
        match = re.search(r"Successfully started run (\d+)", line)
        if match:
            run_id = match.group(1)
        if on_line is not None:
            on_line(line.rstrip("\n"))
        if time.monotonic() > deadline:
            os.killpg(popen.pid, signal.SIGTERM)
            break
    code = popen.wait(timeout=60)
    status = _run_status(flwr, connection, run_id, env) if run_id else "not started"
    return RunOutcome(run_id, status, code)


def _run_status(flwr: str, connection: str, run_id: str, env: dict[str, str]) -> str:
    for _ in range(20):  # the status settles a moment after the log stream ends
        done = subprocess.run(
            [flwr, "ls", connection, "--run-id", run_id, "--format", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        try:
            runs = json.loads(done.stdout).get("runs", [])
        except json.JSONDecodeError:
            runs = []
        status = next(
            (str(r.get("status")) for r in runs if str(r.get("run-id")) == run_id), "unknown"
        )
        if status.startswith("finished"):
            return status
        time.sleep(1.0)
    return status


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@dataclass
class LocalFederation:
    """A SuperLink and one SuperNode per site on loopback ports: the demo's and the tests'.

    Use as a context manager; every process it started is stopped on exit, also on errors.
    """

    folder: Path
    setups: Sequence[SiteSetup]
    say: Callable[[str], None] = print
    processes: list[FlowerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._previous: Any = None
        self.home = self.folder / "flwr_home"
        self.env = flower_env(self.home)
        self.port = 0

    def __enter__(self) -> LocalFederation:
        # SIGTERM (a killed demo, a CI timeout) exits through __exit__, so the processes it
        # started are stopped rather than orphaned.
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def start(self) -> None:
        self.port = free_port()
        link = start_process(
            "SuperLink",
            superlink_command(self.port),
            self.port,
            self.folder / "logs" / "superlink.log",
            self.env,
        )
        self.processes.append(link)
        _wait_listening(link, "127.0.0.1", 60)
        self.say(f"started SuperLink (pid {link.popen.pid}) on 127.0.0.1:{self.port}")
        write_connection(self.home, "local", f"127.0.0.1:{self.port}")
        for setup in self.setups:
            self.start_site(setup)

    def start_site(self, setup: SiteSetup) -> FlowerProcess:
        """Start (or restart) the SuperNode of ``setup``."""
        port = free_port()
        node = start_process(
            f"SuperNode {setup.site}",
            supernode_command(f"127.0.0.1:{self.port}", setup, port=port),
            port,
            self.folder / "logs" / f"supernode-{setup.site}.log",
            self.env,
        )
        self.processes.append(node)
        _wait_listening(node, "127.0.0.1", 60)
        self.say(
            f"started SuperNode for site {setup.site} (pid {node.popen.pid}) on 127.0.0.1:{port}"
        )
        return node

    def run(
        self,
        config: Path,
        out: Path,
        *,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        app = app_folder(self.folder / "app")
        return run_app(
            app, "local", config=config, out=out, env=self.env, timeout=timeout, on_line=on_line
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.alive():
                process.stop()
                self.say(f"stopped {process.name} (pid {process.popen.pid})")
