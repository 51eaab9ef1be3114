"""A site's own settings: its name and local paths, which never leave the site."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitefusion.errors import ConfigError

__all__ = ["SiteSetup"]


@dataclass(frozen=True)
class SiteSetup:
    """A site's own settings (``--node-config`` of its SuperNode): local paths only.

    ``manifest``: a CSV with the config's columns (only this site's rows are used; in a real
    deployment it holds nothing else); ``root``: the folder image paths are relative to
    (default: the manifest's folder); ``workdir``: where the site keeps its run directories.
    """

    site: str
    manifest: Path
    root: Path
    workdir: Path

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
        return cls(
            site=values["site"],
            manifest=manifest,
            root=Path(str(root)).expanduser().resolve(),
            workdir=Path(values["workdir"]).expanduser().resolve(),
        )

    def node_config(self) -> str:
        """This setup as a Flower ``--node-config`` string."""

        def q(value: object) -> str:
            return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

        return (
            f"site={q(self.site)} manifest={q(self.manifest)} root={q(self.root)} "
            f"workdir={q(self.workdir)}"
        )
