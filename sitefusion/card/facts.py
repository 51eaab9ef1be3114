"""What a model card says about a run, read from its run directory (hash-checked).

Every fact comes from an artifact the run recorded: ``config.yaml`` (backbone, normalizer kind,
unseen-site policy, OOD quantile), ``schema.json`` (classes, sites, experts, geometry),
``splits.csv`` (images, groups and classes per site and split; only counts leave this module,
never an id), ``manifest.json`` (initial weights' source and SHA-256, software of each training
invocation) and ``fusion/<name>.json`` (the temperature scoring applies).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitefusion.config import Config, config_from_dict, parse_yaml
from sitefusion.errors import ArtifactError
from sitefusion.methods.fusion import FUSION_METHOD_NAMES
from sitefusion.rundir import RunDir

__all__ = ["RunFacts", "SiteCounts", "read_run_facts"]

_SPLITS = ("train", "val", "fusion", "test")


@dataclass(frozen=True)
class SiteCounts:
    """Counts of one site's images: per split, per class (over every split) and per class in
    the splits its expert and the fusion learned from (``train``, ``val``, ``fusion``)."""

    site: str
    images: dict[str, int]
    groups: int
    classes: dict[str, int]
    learned_classes: dict[str, int]
    test_classes: dict[str, int]


@dataclass(frozen=True)
class RunFacts:
    """The facts of one finished run that a model card reports."""

    root: Path
    cfg: Config
    manifest: dict[str, Any]
    schema: dict[str, Any]
    sites: list[SiteCounts]
    fusion_name: str
    fusion_record: dict[str, Any]
    init_sha256: str | None
    normalizers: dict[str, dict[str, Any]]

    @property
    def classes(self) -> list[str]:
        """The run's class names, in output order."""
        return [str(c) for c in self.schema["classes"]]

    @property
    def experts(self) -> list[str]:
        """The sites with an expert, in the fusion's expert order."""
        return [str(s) for s in self.schema["experts"]]


def _site_counts(run: RunDir, classes: list[str]) -> list[SiteCounts]:
    """Counts per site from ``splits.csv`` (ids and groups are counted, never kept)."""
    source = run.root / "splits.csv"
    reader = csv.DictReader(io.StringIO(run.read_text("splits.csv")))
    missing = {"site", "group", "label", "split"} - set(reader.fieldnames or [])
    if missing:
        raise ArtifactError(f"{source}: columns {sorted(missing)} are missing")
    images: dict[str, Counter[str]] = defaultdict(Counter)
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    learned: dict[str, Counter[str]] = defaultdict(Counter)
    tested: dict[str, Counter[str]] = defaultdict(Counter)
    groups: dict[str, set[str]] = defaultdict(set)
    for line, row in enumerate(reader, start=2):
        site, split, label = row["site"], row["split"], row["label"]
        if split not in _SPLITS:
            raise ArtifactError(
                f"{source}: line {line}, column 'split' is {split!r}; expected one of {_SPLITS}"
            )
        if label not in classes:
            raise ArtifactError(
                f"{source}: line {line}, column 'label' is {label!r}; not a class of the run "
                f"({', '.join(classes)})"
            )
        images[site][split] += 1
        labels[site][label] += 1
        (tested if split == "test" else learned)[site][label] += 1
        groups[site].add(row["group"])
    return [
        SiteCounts(
            site=site,
            images={s: images[site][s] for s in _SPLITS},
            groups=len(groups[site]),
            classes={c: labels[site][c] for c in classes},
            learned_classes={c: learned[site][c] for c in classes},
            test_classes={c: tested[site][c] for c in classes},
        )
        for site in sorted(images)
    ]


def _normalizers(run: RunDir) -> dict[str, dict[str, Any]]:
    """Per site: its normalizer file (as ``bank.json`` lists it), kind, version, SHA-256 and
    the number of training images it was fitted on; ``"<pooled>"`` for the pooled one."""
    index = run.read_json("normalizers/bank.json")
    source = run.root / "normalizers" / "bank.json"
    entries = list(index.get("sites") or [])
    pooled = index.get("pooled")
    if isinstance(pooled, dict):
        entries.append({**pooled, "site": "<pooled>"})
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "file" not in entry:
            raise ArtifactError(f"{source}: field 'sites' holds an entry without 'file': {entry!r}")
        record = run.read_json(f"normalizers/{entry['file']}")
        fitted = record.get("fitted") or {}
        out[str(entry.get("site"))] = {
            "file": f"normalizers/{entry['file']}",
            "sha256": run.read_manifest()["artifacts"][f"normalizers/{entry['file']}"],
            "kind": record.get("kind"),
            "version": record.get("version"),
            "fitted_on_images": fitted.get("n_images_"),
        }
    return out


def read_run_facts(run_dir: str | Path) -> RunFacts:
    """Read the facts of the finished run in ``run_dir``, every artifact hash-checked.

    Raises:
        ArtifactError: the run is missing, unfinished, changed after training or malformed; the
            message names the file and the field.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ArtifactError(f"{root}: run directory does not exist")
    run = RunDir(root)
    manifest = run.read_manifest()
    if manifest.get("status") != "complete":
        raise ArtifactError(
            f"{run.manifest_path}: field 'status' is {manifest.get('status')!r}; a model card "
            "describes a finished run (status 'complete')"
        )
    source = str(root / "config.yaml")
    cfg = config_from_dict(parse_yaml(run.read_text("config.yaml"), source), source)
    schema = run.read_json("schema.json")
    for key in ("classes", "sites", "experts"):
        if not isinstance(schema.get(key), list) or not schema[key]:
            raise ArtifactError(f"{root / 'schema.json'}: field {key!r} must be a non-empty list")
    classes = [str(c) for c in schema["classes"]]
    fusion_name = FUSION_METHOD_NAMES[cfg.fusion.modes[0]]
    rel = f"fusion/{fusion_name}.json"
    if not run.has(rel):
        raise ArtifactError(f"{root / rel}: the run holds no product fusion {fusion_name!r}")
    normalizers = _normalizers(run)
    init = "experts/init.safetensors"
    artifacts = manifest.get("artifacts", {})
    return RunFacts(
        root=root,
        cfg=cfg,
        manifest=manifest,
        schema=schema,
        sites=_site_counts(run, classes),
        fusion_name=fusion_name,
        fusion_record=run.read_json(rel),
        init_sha256=str(artifacts[init]) if init in artifacts else None,
        normalizers=normalizers,
    )
