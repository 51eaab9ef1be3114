"""What a run's training stages share: the data in memory, the rows a fusion learns from, and
the training context every method's ``fit`` receives.

The rule of the design lives here (:func:`select_head_rows`): the fusion never sees a feature an
expert computed on one of its own training images, and no test image at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from rich.console import Console

from sitefusion.config import Config
from sitefusion.data import Manifest
from sitefusion.errors import ArtifactError
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.training.features import ExpertFeatures

__all__ = [
    "HeadRows",
    "RowInfo",
    "RunData",
    "TrainContext",
    "calibration_holdout",
    "head_rows",
    "normalize_rows",
    "select_head_rows",
]


@dataclass
class RunData:
    """Everything about the data a run needs in memory."""

    manifest: Manifest
    splits: dict[str, str]
    images: np.ndarray  # [N, C, *S] conformed, not normalized
    labels: np.ndarray  # [N] int
    sites: np.ndarray  # [N] str
    ids: list[str]

    def rows(self, *split_names: str, site: str | None = None) -> np.ndarray:
        """Row indices of the given splits (and site), in manifest order."""
        wanted = set(split_names)
        return np.array(
            [
                i
                for i, rid in enumerate(self.ids)
                if self.splits[rid] in wanted and (site is None or self.sites[i] == site)
            ],
            dtype=np.int64,
        )


def normalize_rows(
    bank: NormalizerBank, data: RunData, rows: np.ndarray, pooled: bool = False
) -> np.ndarray:
    """Images of ``rows`` normalized by their own site's normalizer (or the pooled one)."""
    out = np.empty((len(rows), *data.images.shape[1:]), dtype=np.float32)
    for j, i in enumerate(rows):
        if pooled:
            out[j] = bank.pooled_.transform(data.images[i])
        else:
            out[j] = bank.transform(data.images[i], str(data.sites[i])).array
    return out


@dataclass(frozen=True)
class HeadRows:
    """The rows of a feature cache a fusion head learns from, and which experts it may use.

    ``presence[j, e]`` is ``False`` when expert ``e`` trained on (or early-stopped with) image
    ``j``: the fusion never sees a feature an expert computed on its own training images.
    """

    positions: np.ndarray  # [M] rows of the feature cache
    labels: np.ndarray  # [M]
    groups: np.ndarray  # [M]
    presence: np.ndarray  # [M, E] bool
    n_fusion: int
    n_cross_fit: int


@dataclass(frozen=True)
class RowInfo:
    """What the fusion needs to know of one image: its site, label index, group and split."""

    site: str
    label: int
    group: str
    split: str


def select_head_rows(
    ids: Sequence[str], info: Mapping[str, RowInfo], experts: Sequence[str], cross_fit: bool
) -> HeadRows:
    """The rows of a feature cache (image ``ids`` in cache order) a fusion learns from.

    Fusion-split rows with every expert present and, with ``cross_fit``, the expert-training
    rows of every site with that site's own expert masked out. Validation rows never: no head
    learns from them, so that every method can be compared on them before the test split is
    looked at (``sitefusion evaluate --split val``). Test rows never.
    """
    experts = list(experts)
    positions, presence = [], []
    n_fusion = n_cross = 0
    for j, rid in enumerate(ids):
        row = info[rid]
        mask = np.ones(len(experts), dtype=bool)
        own = np.array([e == row.site for e in experts])
        if row.split == "fusion":
            n_fusion += 1
        elif row.split == "train" and cross_fit:
            mask[own] = False
            n_cross += 1
        else:
            continue
        positions.append(j)
        presence.append(mask)
    pres = np.array(presence, dtype=bool).reshape(len(positions), len(experts))
    # The contract of the design, checked every time: no expert's feature of an image it
    # trained on reaches the fusion, and no test image does at all.
    chosen = [info[ids[j]] for j in positions]
    for row, m in zip(chosen, pres, strict=True):
        own = np.array([e == row.site for e in experts])
        if row.split in ("test", "val") or (row.split == "train" and (m & own).any()):
            raise ArtifactError(
                f"fusion rows include a {row.split}-split image of {row.site}"
                + (" with its own site's expert present" if row.split == "train" else "")
            )
    return HeadRows(
        positions=np.array(positions, dtype=np.int64),
        labels=np.array([row.label for row in chosen], dtype=np.int64),
        groups=np.array([row.group for row in chosen]),
        presence=pres,
        n_fusion=n_fusion,
        n_cross_fit=n_cross,
    )


def head_rows(cfg: Config, data: RunData, feats: ExpertFeatures) -> HeadRows:
    """:func:`select_head_rows` for a run being trained."""
    info = {
        r.id: RowInfo(r.site, int(label), r.group, data.splits[r.id])
        for r, label in zip(data.manifest.records, data.labels, strict=True)
    }
    return select_head_rows(feats.ids, info, data.manifest.sites, cfg.fusion.cross_fit)


def calibration_holdout(
    cfg: Config, rows: HeadRows, data: RunData, feats: ExpertFeatures
) -> np.ndarray:
    """``[M]`` bool: rows held out of a fine-tuned fusion's training to fit its temperature.

    A seeded ``fusion.calibration_fraction`` of the fusion split's groups (all experts present).
    """
    fusion_rows = np.array([data.splits[feats.ids[j]] == "fusion" for j in rows.positions])
    groups = sorted(set(rows.groups[fusion_rows].tolist()))
    rng = np.random.default_rng([cfg.seed, 4242])
    k = max(1, round(cfg.fusion.calibration_fraction * len(groups)))
    chosen = set(rng.choice(np.array(groups, dtype=object), size=k, replace=False).tolist())
    return fusion_rows & np.array([g in chosen for g in rows.groups])


@dataclass(frozen=True)
class TrainContext:
    """Everything a method's ``fit`` may read, and where it writes (``run``).

    ``features`` / ``random_features``: the cached outputs ``[N, E, D]`` / ``[N, E, K]`` of the
    trained site experts and of the untrained initial experts on every image; ``rows``: the
    fusion's training rows. They are ``None`` before the feature stage (a method trained before
    it, such as pooled training, does not read them) and ``random_features`` is ``None`` when
    the run trains no random-feature control.
    """

    cfg: Config
    run: RunDir
    data: RunData
    bank: NormalizerBank
    features: ExpertFeatures | None = None
    random_features: ExpertFeatures | None = None
    rows: HeadRows | None = None
    console: Console | None = None

    def require_features(self) -> ExpertFeatures:
        """The trained experts' feature cache (the feature stage must have run)."""
        if self.features is None:
            raise ArtifactError(f"{self.run.root}: the feature cache has not been computed yet")
        return self.features

    def require_rows(self) -> HeadRows:
        """The fusion's training rows (the feature stage must have run)."""
        if self.rows is None:
            raise ArtifactError(f"{self.run.root}: the fusion's rows have not been selected yet")
        return self.rows

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.data.manifest.classes)

    @property
    def sites(self) -> tuple[str, ...]:
        """The experts' sites, in expert order."""
        return tuple(self.data.manifest.sites)

    def log(self, message: str) -> None:
        """Print ``message`` on the console, if there is one."""
        if self.console is not None:
            self.console.print(message)
