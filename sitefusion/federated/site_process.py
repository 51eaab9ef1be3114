"""``sitefusion site``: one site's SuperNode, started only once its SuperLink answers, and
stopped with everything it started.

- :func:`check_reachable`: wait until something accepts TCP connections at the SuperLink's
  address, up to a stated deadline, else a :class:`FederationError` naming the address. Flower's
  SuperNode would otherwise retry silently for ``--max-wait-time`` (600 s, kept for reconnecting
  during a run that loses its coordinator for a while).
- :class:`SiteProcess`: the SuperNode in a session of its own, its output on the terminal;
  :meth:`SiteProcess.stop` ends its process group and every descendant that left it (the
  SuperExec and the ClientApp processes Flower spawns; the ClientApp ignores SIGTERM for several
  seconds), SIGTERM first, SIGKILL after a grace period.
- :func:`run_site`: both, with SIGTERM and Ctrl-C turned into that stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from sitefusion.errors import ConfigError, FederationError
from sitefusion.federated.deploy import descendants, end_processes

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "SiteProcess", "check_reachable", "run_site"]

#: Seconds ``sitefusion site`` waits for its SuperLink to answer before it gives up.
DEFAULT_CONNECT_TIMEOUT = 60.0


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--superlink is {address!r}; expected HOST:PORT, e.g. 127.0.0.1:9092")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float, *, poll: float = 0.5) -> None:
    """Return once a TCP connection to ``address`` (``HOST:PORT``) succeeds.

    Raises:
        ConfigError: ``address`` is not ``HOST:PORT``.
        FederationError: nothing accepted a connection within ``timeout`` seconds; names the
            address, the deadline and the last reason.
    """
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout
    reason = "no attempt"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, left))):
                return
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
        if time.monotonic() + poll > deadline:
            raise FederationError(
                f"the SuperLink at {address} is unreachable: no connection within "
                f"{timeout:g} s ({reason}); start the coordinator (sitefusion federate) or check "
                "--superlink, or wait longer with --connect-timeout"
            )
        time.sleep(poll)


@dataclass
class SiteProcess:
    """A started SuperNode (or any command) in its own session."""

    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, command: Sequence[str], env: Mapping[str, str]) -> SiteProcess:
        """Start ``command`` in a new session; its output goes to this terminal."""
        return cls(subprocess.Popen(list(command), env=dict(env), start_new_session=True))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process, its group and every descendant (read from ``/proc`` first: some
        leave the group); SIGKILL whatever still runs ``grace`` seconds later."""
        spawned = [self.popen.pid, *descendants(self.popen.pid)]
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
        end_processes(spawned, grace)
        spawned += [p for p in descendants(self.popen.pid) if p not in spawned]
        end_processes(spawned, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def run_site(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    superlink: str,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    grace: float = 10.0,
    say: Callable[[str], None] = print,
) -> int:
    """Check that ``superlink`` answers, run ``command`` (the SuperNode) until it ends or this
    process is stopped (SIGTERM, SIGHUP, Ctrl-C), then stop everything it started.

    Returns the SuperNode's exit code, or ``128 + signal`` when stopped by a signal.

    Raises:
        FederationError: the SuperLink did not answer within ``connect_timeout`` seconds.
    """
    check_reachable(superlink, connect_timeout)
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, _raise_stopped)
    process = None
    try:
        process = SiteProcess.start(command, env)
        say(f"SuperNode (pid {process.popen.pid}) connecting to {superlink} (Ctrl-C stops it)")
        return process.popen.wait()
    except _Stopped as stopped:
        say(f"stopping the SuperNode (pid {process.popen.pid if process else '-'})")
        return 128 + int(stopped.args[0])
    except KeyboardInterrupt:
        say("interrupted; stopping the SuperNode")
        return 130
    finally:
        if process is not None:
            process.stop(grace)
        for number, handler in previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
