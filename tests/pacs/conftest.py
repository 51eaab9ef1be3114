"""Fixtures for the DICOM node tests: a tiny trained run, real external programs (Orthanc,
storescu, dciodvfy), a study made of pydicom's sample files, and a node factory."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pacs_samples import MODALITY_AE, NODE_AE, make_study

from sitefusion.config import Config
from sitefusion.pacs.local import DICOMWEB_PLUGIN, NodeProcess, OrthancServer, free_port
from sitefusion.workflows import train_run


@pytest.fixture(scope="session")
def pacs_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config: Callable[..., Config],
    synthetic_2d: Path,
) -> Path:
    """A tiny 2D single-channel run (3 sites, 3 classes, 24 x 24)."""
    out = tmp_path_factory.mktemp("pacs_run") / "run"
    train_run(tiny_config(synthetic_2d), out)
    return out


def _need(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; `make test-tools`)")
    return found


@pytest.fixture
def storescu() -> str:
    """dcmtk's storescu, the sending modality."""
    return _need("storescu", "dcmtk")


@pytest.fixture
def orthanc_tools() -> None:
    """Orthanc and its DICOMweb plugin, or a skip that says which is missing."""
    _need("Orthanc", "orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip(f"{DICOMWEB_PLUGIN} is missing (Debian package orthanc-dicomweb)")


@pytest.fixture
def study(tmp_path: Path) -> dict[str, list[Path]]:
    """Two series of three instances each (see :func:`make_study`)."""
    return make_study(tmp_path / "study")


@pytest.fixture
def orthanc(tmp_path: Path, orthanc_tools: None) -> Iterator[Callable[[int], OrthancServer]]:
    """Factory: an Orthanc that accepts C-STORE from the node (``SFNODE`` on the given port)."""
    started: list[OrthancServer] = []

    def start(node_port: int) -> OrthancServer:
        from sitefusion.pacs import AeAddress

        server = OrthancServer(
            tmp_path / "orthanc", {"sitefusion": AeAddress(NODE_AE, "127.0.0.1", node_port)}
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def node(tmp_path: Path, pacs_run: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: ``node(port, *extra_args)`` starts ``sitefusion listen`` into ``tmp_path/node``
    (log ``tmp_path/node.log``), allowing ``MODALITY``."""
    started: list[NodeProcess] = []

    def start(port: int, *extra: str) -> NodeProcess:
        args = [
            str(pacs_run),
            "--out",
            str(tmp_path / "node"),
            "--ae-title",
            NODE_AE,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--allow",
            MODALITY_AE,
            *extra,
        ]
        process = NodeProcess(args, tmp_path / "node.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def node_port() -> int:
    """A free loopback port for the node."""
    return free_port()
