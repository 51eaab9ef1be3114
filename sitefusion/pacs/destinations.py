"""Where a DICOM node sends its Structured Reports: a DICOM AE by C-STORE, or a STOW-RS URL.

Both send one Part 10 file and raise :class:`SendError` with a one-line reason when the
receiver did not confirm it; the node then keeps the SR and tries again later.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread

from sitefusion.errors import MissingDependencyError, SiteFusionError

__all__ = [
    "AeAddress",
    "Destination",
    "DimseDestination",
    "SendError",
    "StowDestination",
    "check_ae_title",
    "load_credentials",
    "parse_ae_address",
]


class SendError(SiteFusionError):
    """An SR was not accepted by its destination (refused, unreachable, failure status)."""


def check_ae_title(title: str, what: str) -> str:
    """``title`` if it is a valid AE title (1-16 characters, no backslash or control
    characters, not only spaces), else :class:`SiteFusionError` naming ``what``."""
    if not (1 <= len(title) <= 16) or not title.strip() or re.search(r"[\\\x00-\x1f]", title):
        raise SiteFusionError(
            f"{what}: {title!r} is not a valid AE title; expected 1 to 16 characters without "
            "backslash or control characters, e.g. SITEFUSION"
        )
    return title


@dataclass(frozen=True)
class AeAddress:
    """A DICOM application entity: its title, host and port."""

    title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.title}@{self.host}:{self.port}"


def parse_ae_address(text: str, what: str = "--send-to") -> AeAddress:
    """``AE@host:port`` -> :class:`AeAddress`; a one-line error naming ``what`` otherwise."""
    match = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@]+):(\d+)", text.strip())
    if match is None:
        raise SiteFusionError(f"{what}: {text!r} is not AE@host:port, e.g. ORTHANC@pacs.local:4242")
    port = int(match.group(3))
    if not 1 <= port <= 65535:
        raise SiteFusionError(f"{what}: port {port} in {text!r} is not between 1 and 65535")
    return AeAddress(check_ae_title(match.group(1), what), match.group(2).strip("[]"), port)


class Destination(Protocol):
    """Sends one SR file; raises :class:`SendError` unless the receiver confirmed it."""

    def send(self, path: Path) -> None:
        """Send the DICOM file at ``path``."""
        ...

    def describe(self) -> str:
        """Where it sends, for the log (no credentials)."""
        ...


@dataclass(frozen=True)
class DimseDestination:
    """C-STORE to ``address``, calling as ``calling_ae``."""

    address: AeAddress
    calling_ae: str
    timeout: float = 30.0

    def describe(self) -> str:
        """``AE@host:port``."""
        return str(self.address)

    def send(self, path: Path) -> None:
        """One association, one C-STORE; success or a warning status counts as stored."""
        try:
            from pynetdicom import AE  # lazy: an optional dependency (extra "pacs")
        except ImportError as err:
            raise MissingDependencyError(
                "sending SRs by C-STORE needs pynetdicom: pip install 'sitefusion[pacs]'"
            ) from err
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        ds = dcmread(path)
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        syntaxes = list(
            dict.fromkeys(
                [
                    str(ds.file_meta.TransferSyntaxUID),
                    ExplicitVRLittleEndian,
                    ImplicitVRLittleEndian,
                ]
            )
        )
        ae.add_requested_context(str(ds.SOPClassUID), syntaxes)
        assoc = ae.associate(self.address.host, self.address.port, ae_title=self.address.title)
        if not assoc.is_established:
            raise SendError(
                f"{self.address}: association not established (refused, aborted or unreachable)"
            )
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        code = getattr(status, "Status", None)
        # 0x0000 success; 0xB000, 0xB007, 0xB006: stored with a warning
        if code is None or not (code == 0 or 0xB000 <= int(code) <= 0xBFFF):
            shown = "no response" if code is None else f"0x{int(code):04X}"
            raise SendError(f"{self.address}: C-STORE of {path.name} answered {shown}")


def load_credentials(path: Path | None) -> dict[str, str]:
    """Credentials for a DICOMweb server from a JSON file: ``{"username", "password"}`` (HTTP
    basic) or ``{"token"}`` (bearer). ``None``: no credentials. The file is never echoed."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SiteFusionError(f"{path}: cannot read credentials: {type(err).__name__}") from err
    if not isinstance(raw, dict):
        raise SiteFusionError(f"{path}: credentials must be a JSON object")
    keys = set(raw)
    if keys not in ({"username", "password"}, {"token"}) or not all(
        isinstance(v, str) for v in raw.values()
    ):
        raise SiteFusionError(
            f"{path}: credentials hold {sorted(keys)}; expected string fields "
            "['password', 'username'] or ['token']"
        )
    return {str(k): str(v) for k, v in raw.items()}


def dicomweb_session(url: str, credentials: dict[str, str]) -> Any:
    """A requests session for ``url`` with ``credentials``; refuses to send credentials over
    plain HTTP to anything but loopback."""
    import requests  # lazy: with dicomweb-client (extra "pacs")

    host = re.sub(r"^[a-z]+://([^/:]+).*$", r"\1", url)
    if credentials and url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
        raise SiteFusionError(
            f"{url}: credentials would travel in plain text; use https:// for a remote server"
        )
    session = requests.Session()
    if "token" in credentials:
        session.headers["Authorization"] = f"Bearer {credentials['token']}"
    elif credentials:
        session.auth = (credentials["username"], credentials["password"])
    return session


@dataclass(frozen=True)
class StowDestination:
    """STOW-RS to a DICOMweb service root ``url`` (TLS verified for https)."""

    url: str
    credentials: dict[str, str]

    def describe(self) -> str:
        """The service URL."""
        return self.url

    def send(self, path: Path) -> None:
        """One STOW-RS request holding the file."""
        try:
            from dicomweb_client.api import DICOMwebClient  # lazy: optional (extra "pacs")
        except ImportError as err:
            raise MissingDependencyError(
                "sending SRs by STOW-RS needs dicomweb-client: pip install 'sitefusion[pacs]'"
            ) from err
        client = DICOMwebClient(self.url, session=dicomweb_session(self.url, self.credentials))
        try:
            client.store_instances([dcmread(path)])
        except Exception as err:  # requests' HTTPError, connection errors: retried later
            raise SendError(
                f"{self.url}: STOW-RS of {path.name} failed: {type(err).__name__}"
            ) from err
