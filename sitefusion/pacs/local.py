"""A PACS and a node on loopback, for the demo and the tests: a real Orthanc (with its DICOMweb
plugin), a ``sitefusion listen`` process, and dcmtk's ``storescu`` as the sending modality.

Every process runs in its own process group and is stopped by :meth:`stop` (also on error when
used as a context manager). Nothing here is used by the node itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from sitefusion.errors import MissingDependencyError, SiteFusionError
from sitefusion.pacs.destinations import AeAddress

__all__ = [
    "DICOMWEB_PLUGIN",
    "NodeProcess",
    "OrthancServer",
    "free_port",
    "image_to_dicom",
    "send_with_storescu",
    "tool",
]

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
"""Where Debian's ``orthanc-dicomweb`` installs the plugin."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tool(name: str, package: str) -> str:
    """Path of an external program, or :class:`MissingDependencyError` naming its package."""
    found = shutil.which(name)
    if found is None:
        raise MissingDependencyError(f"{name} not found; install it: apt-get install {package}")
    return found


def _stop_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)


@dataclass
class OrthancServer:
    """An Orthanc on 127.0.0.1 with its own storage in ``folder``; DICOMweb at
    :attr:`dicomweb_url`. Only the ``modalities`` may C-STORE into it (each by AE title, host and
    port, as a PACS administrator registers a node)."""

    folder: Path
    modalities: dict[str, AeAddress] = field(default_factory=dict)
    aet: str = "ORTHANC"
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The REST API's root."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service root."""
        return f"{self.url}/dicom-web"

    @property
    def address(self) -> AeAddress:
        """Its DICOM address."""
        return AeAddress(self.aet, "127.0.0.1", self.dicom_port)

    def config(self) -> dict[str, Any]:
        """The configuration it is started with."""
        return {
            "Name": "sitefusion-local",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,  # loopback only
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": False,  # only registered modalities may store
            "DicomCheckModalityHost": True,
            "DicomModalities": {
                name: [a.title, a.host, a.port] for name, a in self.modalities.items()
            },
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 2,
        }

    def start(self, timeout: float = 60.0) -> OrthancServer:
        """Write the configuration, start Orthanc, wait for its REST API."""
        binary = tool("Orthanc", "orthanc")
        if not DICOMWEB_PLUGIN.is_file():
            raise MissingDependencyError(
                f"{DICOMWEB_PLUGIN} not found; install it: apt-get install orthanc-dicomweb"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        self._log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [binary, str(path)], stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SiteFusionError(
                    f"Orthanc exited with {self.process.returncode}; see {self.folder / 'orthanc.log'}"
                )
            with contextlib.suppress(OSError):
                self.rest("/system")
                return self
            time.sleep(0.2)
        self.stop()
        raise SiteFusionError(f"Orthanc did not answer within {timeout:.0f} s")

    def _call(self, path: str, body: bytes | None = None) -> bytes:
        """One request to this Orthanc's REST API on 127.0.0.1 (GET, or POST ``body``); the
        answer's bytes. The connection can reach nothing but the loopback server started here."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            connection.request("GET" if body is None else "POST", path, body=body)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise OSError(f"Orthanc answered {response.status} to {path}")
        return data

    def rest(self, path: str, body: Any = None) -> Any:
        """GET (or POST ``body`` as JSON) on the REST API; the decoded JSON answer."""
        return json.loads(self._call(path, None if body is None else json.dumps(body).encode()))

    def upload(self, path: Path) -> str:
        """Store a DICOM file through the REST API (as an archive already holds studies);
        returns Orthanc's instance id."""
        return str(json.loads(self._call("/instances", path.read_bytes()))["ID"])

    def file(self, instance_id: str) -> bytes:
        """The stored DICOM file of an instance (Orthanc's id)."""
        return self._call(f"/instances/{instance_id}/file")

    def instances(self, modality: str) -> list[str]:
        """Orthanc ids of the stored instances whose series has ``modality``."""
        found = self.rest("/tools/find", {"Level": "Instance", "Query": {"Modality": modality}})
        return [str(i) for i in found]

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            _stop_group(self.process)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> OrthancServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def node_env() -> dict[str, str]:
    """The environment of a child ``sitefusion`` process: this process's, with the sitefusion
    that is running first on the path (a source checkout beside an installed copy)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds sitefusion/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class NodeProcess:
    """``sitefusion listen`` in a child process, its log in ``log_path``."""

    args: Sequence[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, timeout: float = 120.0) -> NodeProcess:
        """Start it and wait until it listens."""
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sitefusion.cli.main", "listen", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=node_env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[start:].decode(errors="replace")
            if "listening as" in text:
                return self
            if self.process.poll() is not None:
                raise SiteFusionError(f"sitefusion listen exited: {text.strip()[-500:]}")
            time.sleep(0.2)
        self.stop()
        raise SiteFusionError(f"sitefusion listen did not start within {timeout:.0f} s")

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL (a crash): no clean-up at all."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None
        self._close()

    def stop(self) -> None:
        """SIGTERM (finishes the current pass), then SIGKILL if it does not exit."""
        if self.process is not None:
            _stop_group(self.process, grace=60.0)
            self.process = None
        self._close()

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def send_with_storescu(
    paths: Sequence[Path], calling: str, called: AeAddress, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """dcmtk's ``storescu``: one association sending ``paths`` (files or folders, recursed)."""
    binary = tool("storescu", "dcmtk")
    return subprocess.run(
        [
            binary,
            "-aet",
            calling,
            "-aec",
            called.title,
            "+sd",
            "+r",
            called.host,
            str(called.port),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def image_to_dicom(
    pixels: np.ndarray,
    path: Path,
    *,
    study_uid: str,
    series_uid: str,
    number: int,
    patient: tuple[str, str] = ("Synthetic^Ada", "SYN-0001"),
) -> Path:
    """Write a 2D grey image (``[H, W]``, 8 or 16 bit) as a Secondary Capture DICOM file, as a
    modality would send it (for the demo: the synthetic set's PNGs as a series)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    array = np.asarray(pixels)
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise SiteFusionError(
            f"{path}: image_to_dicom takes a 2D uint8/uint16 image, got {array.dtype} {array.shape}"
        )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.PatientName, ds.PatientID = patient
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "080000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = array.shape
    bits = 8 * array.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(array).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
