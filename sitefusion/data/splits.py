"""Group-wise splits: expert training (``train`` + its ``val`` part), ``fusion`` and ``test``.

Every group (patient, lesion) lands in exactly one split, whatever site its images come from: a
lesion photographed at two sites follows its *home site* (where most of its images are), so no
group can leak across splits through another site. Within each home site the split is stratified
by label where the class counts allow it (scikit-learn's ``StratifiedGroupKFold``).
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from sitefusion.atomic import write_text_atomic
from sitefusion.config import SplitConfig
from sitefusion.csvcells import csv_text, unescape_cell
from sitefusion.data.manifest import Manifest
from sitefusion.errors import ManifestError

__all__ = [
    "SPLIT_NAMES",
    "LeakageError",
    "check_leakage",
    "group_splits",
    "load_split_table",
    "load_splits",
    "make_splits",
    "save_splits",
    "split_ids",
    "splits_csv",
]

SPLIT_NAMES = ("train", "val", "fusion", "test")
_FOLDS = 20


class LeakageError(ManifestError):
    """A group (patient or lesion) appears in more than one split."""


def _fold_assign(groups: list[str], labels: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Map each group to a fold index in ``[0, n_folds)``, stratified by label where possible.

    ``groups`` are distinct, ``labels`` their labels. When no class has enough groups to stratify,
    groups are dealt round-robin in a seeded random order.
    """
    n_folds = max(2, min(n_folds, len(groups)))
    if len(groups) < 2:
        return {g: 0 for g in groups}
    largest = max(Counter(labels).values())
    if largest >= n_folds:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        y = np.array(labels)
        g = np.array(groups)
        out: dict[str, int] = {}
        with warnings.catch_warnings():
            # Rare classes with fewer groups than folds are expected (HAM10000 'df' at a site).
            warnings.simplefilter("ignore", UserWarning)
            for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y, g)):
                for grp in g[test_idx].tolist():
                    out[grp] = fold
        return out
    order = np.random.default_rng(seed).permutation(len(groups))
    return {groups[i]: k % n_folds for k, i in enumerate(order)}


def group_splits(
    manifest: Manifest, cfg: SplitConfig, *, exclude: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Assign every group of ``manifest`` but those in ``exclude`` to one of :data:`SPLIT_NAMES`.

    Groups are split per home site into ``test``, ``fusion`` and expert-training folds in the
    configured proportions; a ``val_fraction`` of each site's training groups becomes ``val``
    (early stopping). Deterministic for a given manifest, ``exclude`` and ``cfg.seed``.
    ``exclude``: groups whose split another party decides (a federated site's groups that are
    at home at another site); they take no part in the fold assignment, so the other groups get
    the split they get when the whole manifest is split in one place.
    """
    group_sites: dict[str, Counter[str]] = defaultdict(Counter)
    group_label: dict[str, str] = {}
    for r in manifest.records:
        group_sites[r.group][r.site] += 1
        group_label.setdefault(r.group, r.label or "")
    home = {
        g: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        for g, c in group_sites.items()
        if g not in exclude
    }

    group_split: dict[str, str] = {}
    n_test = max(1, round(cfg.test * _FOLDS))
    n_fusion = max(1, round(cfg.fusion * _FOLDS))
    for site in manifest.sites:
        site_groups = sorted(g for g, h in home.items() if h == site)
        if not site_groups:
            continue
        folds = _fold_assign(site_groups, [group_label[g] for g in site_groups], _FOLDS, cfg.seed)
        n_folds = max(folds.values()) + 1
        # Scale the fold counts when a small site has fewer than _FOLDS folds.
        t = max(1, round(n_test * n_folds / _FOLDS))
        f = max(1, round(n_fusion * n_folds / _FOLDS))
        train_groups = []
        for g in site_groups:
            k = folds[g]
            if k < t:
                group_split[g] = "test"
            elif k < t + f:
                group_split[g] = "fusion"
            else:
                train_groups.append(g)
        if not train_groups:
            continue
        n_val_folds = max(2, round(1.0 / cfg.val_fraction))
        vfolds = _fold_assign(
            train_groups,
            [group_label[g] for g in train_groups],
            n_val_folds,
            (cfg.seed + 1) % 2**32,  # scikit-learn's random_state takes 32 bits
        )
        for g in train_groups:
            group_split[g] = "val" if vfolds[g] == 0 and len(train_groups) > 1 else "train"
    return group_split


def make_splits(
    manifest: Manifest, cfg: SplitConfig, *, fixed: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Assign every image id of ``manifest`` to one of :data:`SPLIT_NAMES`, by group.

    The groups' splits are :func:`group_splits`'s; ``fixed`` (group -> split) sets the split of
    groups decided elsewhere (a federated site's groups at home at another site: the split
    their home site gave them), which then take no part in the fold assignment. The result is
    checked with :func:`check_leakage` before it is returned.

    Raises:
        ManifestError: a ``fixed`` split is not one of :data:`SPLIT_NAMES`.
    """
    fixed = dict(fixed or {})
    bad = sorted({v for v in fixed.values() if v not in SPLIT_NAMES})
    if bad:
        raise ManifestError(
            f"{manifest.source}: fixed group splits {bad} are not among {list(SPLIT_NAMES)}"
        )
    group_split = group_splits(manifest, cfg, exclude=frozenset(fixed))
    group_split.update(fixed)
    assignment = {r.id: group_split[r.group] for r in manifest.records}
    check_leakage(manifest, assignment)
    return assignment


def check_leakage(manifest: Manifest, assignment: Mapping[str, str]) -> None:
    """Raise :class:`LeakageError` if any group has images in two splits, or an id is unassigned.

    The message names the offending groups by their manifest row, not by identifying values.
    """
    seen: dict[str, set[str]] = defaultdict(set)
    missing = []
    for r in manifest.records:
        split = assignment.get(r.id)
        if split is None:
            missing.append(r.row)
            continue
        if split not in SPLIT_NAMES:
            raise LeakageError(f"{manifest.source}: row {r.row} has unknown split {split!r}")
        seen[r.group].add(split)
    if missing:
        raise LeakageError(
            f"{manifest.source}: {len(missing)} image(s) have no split (rows {missing[:5]}...)"
        )
    leaking = {g: s for g, s in seen.items() if len(s) > 1}
    if leaking:
        example_rows = [r.row for r in manifest.records if r.group in leaking][:6]
        raise LeakageError(
            f"{manifest.source}: {len(leaking)} group(s) cross splits (rows {example_rows}); "
            "a group's images must all be in one split"
        )


def split_ids(assignment: Mapping[str, str], *names: str) -> list[str]:
    """Ids assigned to any of the split ``names``, sorted."""
    wanted = set(names)
    return sorted(i for i, s in assignment.items() if s in wanted)


def splits_csv(manifest: Manifest, assignment: Mapping[str, str]) -> str:
    """The splits table as CSV text: ``id, site, group, label, split``, one row per image."""
    return csv_text(
        ["id", "site", "group", "label", "split"],
        ([r.id, r.site, r.group, r.label or "", assignment[r.id]] for r in manifest.records),
    )


def save_splits(path: str | Path, manifest: Manifest, assignment: Mapping[str, str]) -> None:
    """Write :func:`splits_csv` atomically."""
    write_text_atomic(path, splits_csv(manifest, assignment))


def load_split_table(path: str | Path) -> dict[str, dict[str, str]]:
    """Read a splits CSV into ``{id: {"site", "group", "label", "split"}}``."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            return {
                unescape_cell(row["id"]): {
                    k: unescape_cell(row[k]) for k in ("site", "group", "label", "split")
                }
                for row in csv.DictReader(fh)
            }
    except (OSError, KeyError, csv.Error) as err:
        raise ManifestError(f"{path}: cannot read the splits file ({err})") from err


def load_splits(path: str | Path) -> dict[str, str]:
    """Read a splits CSV written by :func:`save_splits` into ``{id: split}``."""
    return {i: row["split"] for i, row in load_split_table(path).items()}
