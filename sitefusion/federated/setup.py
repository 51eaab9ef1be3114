"""A site's own settings: its name and local paths, which never leave the site."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitefusion.errors import ConfigError

__all__ = ["GROUP_KEY_HELP", "SiteSetup", "write_group_key"]

GROUP_KEY_HELP = (
    "make one with: python -c 'import secrets; print(secrets.token_hex(32))' > group.key, and "
    "give the same file to every site, not to the coordinator"
)


def write_group_key(path: str | Path) -> Path:
    """Write a fresh random group key (64 hex characters) to ``path``, readable by its owner only,
    for a federation run on one machine (a consortium makes its key once and hands it to every
    site out of band)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return target


@dataclass(frozen=True)
class SiteSetup:
    """A site's own settings (``--node-config`` of its SuperNode): local paths only.

    ``manifest``: a CSV with the config's columns (only this site's rows are used; in a real
    deployment it holds nothing else); ``root``: the folder image paths are relative to
    (default: the manifest's folder); ``workdir``: where the site keeps its run directories.
    ``group_key``: a file holding the consortium's secret group key (at least 16 bytes, the same
    at every site, never given to the coordinator). With it the sites find the groups (patients,
    lesions) that more than one of them holds, by keyed hashes of their group ids, so that such a
    group lands in one split everywhere (:data:`GROUP_KEY_HELP`).
    """

    site: str
    manifest: Path
    root: Path
    workdir: Path
    group_key: Path | None = None

    def read_group_key(self) -> bytes | None:
        """The group key's bytes (surrounding whitespace stripped), or None without a key file.

        Raises:
            ConfigError: the file cannot be read or holds fewer than 16 bytes.
        """
        if self.group_key is None:
            return None
        try:
            key = self.group_key.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                f"{self.group_key}: the site's group key cannot be read ({exc.strerror})"
            ) from exc
        if len(key) < 16:
            raise ConfigError(
                f"{self.group_key}: the group key holds {len(key)} bytes; it needs at least 16 "
                f"({GROUP_KEY_HELP})"
            )
        return key

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> SiteSetup:
        """Read ``site``, ``manifest``, ``workdir`` and optional ``root`` from a node config.

        Raises:
            ConfigError: a key is missing or empty, or the manifest is not a file.
        """
        values = {}
        for key in ("site", "manifest", "workdir"):
            value = config.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"site node config: {key!r} is {value!r}; start the site with "
                    "sitefusion site --site NAME --manifest CSV --workdir DIR"
                )
            values[key] = value
        manifest = Path(values["manifest"]).expanduser().resolve()
        if not manifest.is_file():
            raise ConfigError(f"{manifest}: the site's manifest is not a file")
        root = config.get("root") or str(manifest.parent)
        key_file = config.get("group_key") or None
        setup = cls(
            site=values["site"],
            manifest=manifest,
            root=Path(str(root)).expanduser().resolve(),
            workdir=Path(values["workdir"]).expanduser().resolve(),
            group_key=Path(str(key_file)).expanduser().resolve() if key_file else None,
        )
        setup.read_group_key()  # a bad key file is the site's start-up error, not a phase's
        return setup

    def node_config(self) -> str:
        """This setup as a Flower ``--node-config`` string."""

        def q(value: object) -> str:
            return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

        text = (
            f"site={q(self.site)} manifest={q(self.manifest)} root={q(self.root)} "
            f"workdir={q(self.workdir)}"
        )
        return text + (f" group_key={q(self.group_key)}" if self.group_key else "")
