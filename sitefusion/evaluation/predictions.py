"""The input contract of evaluation: every method's predictions on one set of test images.

A :class:`PredictionSet` holds, for ``N`` test images, their ids, labels, sites and groups
(lesion/patient), and for each evaluated method its class probabilities ``[N, C]`` and, for fusion
methods, the fusion weights ``[N, E]`` over the ``E`` experts. Construction validates every shape
and value and fails with a message that names the field, the method and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from sitefusion.errors import UnknownChoiceError
from sitefusion.evaluation.errors import PredictionSetError
from sitefusion.evaluation.method_families import FUSION, LOCAL, METHOD_FAMILIES, report_order

__all__ = [
    "BASE_METHODS",
    "FUSION_METHODS",
    "PredictionSet",
    "canonical_method_order",
    "check_method_name",
    "local_method",
]

#: Fusion heads (the product is ``fusion``); these may carry attention weights.
FUSION_METHODS: tuple[str, ...] = FUSION.method_names
#: Every method name except the per-site local experts ``local:<site>``, in report order
#: (:data:`~sitefusion.evaluation.method_families.METHOD_FAMILIES`).
BASE_METHODS: tuple[str, ...] = tuple(n for f in METHOD_FAMILIES for n in f.method_names)
_LOCAL = re.compile(rf"^{re.escape(LOCAL.name)}:(?P<site>.+)$")

# Probabilities are often float32 softmax outputs; rows then sum to 1 only to about 1e-6.
_ROW_SUM_TOL = 1e-4


def local_method(expert: str) -> str:
    """Return the method name of the local expert of site ``expert``: ``"local:<expert>"``."""
    return LOCAL.site_method(expert)


def check_method_name(name: str, experts: Iterable[str]) -> str:
    """Return ``name`` if it is a valid method name, else raise :class:`UnknownChoiceError`.

    Valid: the names in :data:`BASE_METHODS` and ``local:<expert>`` for each of ``experts``.
    """
    experts = tuple(experts)
    match = _LOCAL.match(name)
    if name in BASE_METHODS or (match is not None and match["site"] in experts):
        return name
    raise UnknownChoiceError("method", name, [*BASE_METHODS, *(local_method(e) for e in experts)])


def canonical_method_order(names: Iterable[str], experts: Iterable[str]) -> list[str]:
    """Sort method names for reports: fusion heads, pooled, local experts (expert order), rest
    (:func:`~sitefusion.evaluation.method_families.report_order`).

    Unknown names are kept, after the known ones, in their given order.
    """
    order = report_order(tuple(experts))
    rank = {name: i for i, name in enumerate(order)}
    names = list(names)
    return sorted(names, key=lambda n: (rank.get(n, len(order)), names.index(n)))


def _names(field: str, value: Iterable[str], minimum: int) -> tuple[str, ...]:
    if isinstance(value, str):
        raise PredictionSetError(f"PredictionSet.{field}: expected a sequence of names, got a str")
    names = tuple(str(v) for v in value)
    if len(names) < minimum:
        raise PredictionSetError(
            f"PredictionSet.{field}: expected at least {minimum} name(s), got {len(names)}"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PredictionSetError(f"PredictionSet.{field}: duplicate names {dupes}")
    if any(not n for n in names):
        raise PredictionSetError(f"PredictionSet.{field}: empty name in {list(names)}")
    return names


def _column(field: str, value: object, n: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise PredictionSetError(f"PredictionSet.{field}: expected shape [N], got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise PredictionSetError(
            f"PredictionSet.{field}: expected {n} rows (one per image, like ids), "
            f"got {arr.shape[0]}"
        )
    return arr


def _matrix(field: str, method: str, value: object, n: int, width: int, what: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)  # a copy: made read-only below, the caller's is not
    if arr.shape != (n, width):
        raise PredictionSetError(
            f"PredictionSet.{field}[{method!r}]: expected shape [N, {what}] = [{n}, {width}], "
            f"got {list(arr.shape)}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(arr), axis=1))[0])
        raise PredictionSetError(
            f"PredictionSet.{field}[{method!r}]: non-finite value in row {bad}"
        )
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class PredictionSet:
    """Predictions of several methods on the same ``N`` test images, with their metadata.

    Attributes:
        classes: class names ``(C,)``; the position is the label integer.
        sites: site names in report order.
        experts: expert (site) names, in the order of the attention weights' columns.
        ids: ``[N]`` str image ids (unique).
        labels: ``[N]`` int labels in ``[0, C)``.
        site: ``[N]`` str site of each image; each is one of ``sites``.
        group: ``[N]`` str group (lesion or patient) of each image. The bootstrap resamples
            groups, so all images of one patient must share one group value.
        probs: method name -> ``[N, C]`` probabilities, non-negative, rows summing to 1.
        attention: method name -> ``[N, E]`` fusion weights (fusion methods only; each key must
            also be in ``probs``).

    Method names: ``fusion``, ``fusion_concat``, ``fusion_attention``, ``pooled``,
    ``local:<expert>``, ``output_average``, ``weight_average``, ``stacking``,
    ``random_features``; any non-empty subset. Arrays are converted (ids/site/group to ``str``,
    labels to ``int64``, matrices to read-only ``float64``) and validated on construction;
    violations raise :class:`PredictionSetError`, unknown method names
    :class:`~sitefusion.errors.UnknownChoiceError`.
    """

    classes: tuple[str, ...]
    sites: tuple[str, ...]
    experts: tuple[str, ...]
    ids: np.ndarray
    labels: np.ndarray
    site: np.ndarray
    group: np.ndarray
    probs: Mapping[str, np.ndarray]
    attention: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        classes = _names("classes", self.classes, 2)
        sites = _names("sites", self.sites, 1)
        experts = _names("experts", self.experts, 0)
        ids = _column("ids", self.ids, None).astype(str)
        n = ids.shape[0]
        if n == 0:
            raise PredictionSetError("PredictionSet.ids: no images (N = 0)")
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.shape[0] != n:
            raise PredictionSetError(
                f"PredictionSet.ids: duplicate image ids, e.g. {uniq[counts > 1][:3].tolist()}"
            )
        labels_raw = _column("labels", self.labels, n)
        if labels_raw.dtype.kind not in "iu":
            if labels_raw.dtype.kind == "f" and np.all(labels_raw == np.round(labels_raw)):
                labels_raw = labels_raw.astype(np.int64)
            else:
                raise PredictionSetError(
                    f"PredictionSet.labels: expected integers, got dtype {labels_raw.dtype}"
                )
        labels = labels_raw.astype(np.int64)
        bad = (labels < 0) | (labels >= len(classes))
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise PredictionSetError(
                f"PredictionSet.labels: image {str(ids[i])!r} has label {int(labels[i])}, "
                f"expected 0..{len(classes) - 1} (classes {list(classes)})"
            )
        site = _column("site", self.site, n).astype(str)
        unknown = sorted(set(np.unique(site).tolist()) - set(sites))
        if unknown:
            raise PredictionSetError(
                f"PredictionSet.site: site(s) {unknown} are not in sites {list(sites)}"
            )
        group = _column("group", self.group, n).astype(str)
        if not self.probs:
            raise PredictionSetError("PredictionSet.probs: no method; expected at least one")
        probs: dict[str, np.ndarray] = {}
        for name, value in self.probs.items():
            check_method_name(name, experts)
            p = _matrix("probs", name, value, n, len(classes), "C")
            if np.any(p < 0):
                raise PredictionSetError(f"PredictionSet.probs[{name!r}]: negative probability")
            sums = p.sum(axis=1)
            off = np.abs(sums - 1.0) > _ROW_SUM_TOL
            if np.any(off):
                i = int(np.flatnonzero(off)[0])
                raise PredictionSetError(
                    f"PredictionSet.probs[{name!r}]: row of image {str(ids[i])!r} sums to "
                    f"{sums[i]:.6f}, expected 1 (pass softmax outputs, not logits)"
                )
            probs[name] = p
        attention: dict[str, np.ndarray] = {}
        for name, value in self.attention.items():
            if name not in probs:
                raise UnknownChoiceError("method with probabilities for attention", name, probs)
            attention[name] = _matrix("attention", name, value, n, len(experts), "E")
        for arr in (ids, labels, site, group):
            arr.setflags(write=False)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "experts", experts)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "site", site)
        object.__setattr__(self, "group", group)
        ordered = canonical_method_order(probs, experts)
        object.__setattr__(self, "probs", MappingProxyType({k: probs[k] for k in ordered}))
        object.__setattr__(self, "attention", MappingProxyType(attention))

    @property
    def n_images(self) -> int:
        """Number of test images ``N``."""
        return int(self.ids.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.classes)

    @property
    def methods(self) -> tuple[str, ...]:
        """Method names present, in report order (fusion heads, pooled, local experts, rest)."""
        return tuple(self.probs)

    def site_mask(self, site: str) -> np.ndarray:
        """Return the ``[N]`` bool mask of the images of ``site``."""
        if site not in self.sites:
            raise UnknownChoiceError("site", site, self.sites)
        return np.asarray(self.site == site)

    def subset(self, mask: np.ndarray) -> PredictionSet:
        """Return a new set holding only the images where the ``[N]`` bool ``mask`` is true."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.n_images,):
            raise PredictionSetError(
                f"PredictionSet.subset: expected a bool mask of shape [{self.n_images}], "
                f"got {mask.dtype} {list(mask.shape)}"
            )
        return PredictionSet(
            classes=self.classes,
            sites=self.sites,
            experts=self.experts,
            ids=self.ids[mask],
            labels=self.labels[mask],
            site=self.site[mask],
            group=self.group[mask],
            probs={k: v[mask] for k, v in self.probs.items()},
            attention={k: v[mask] for k, v in self.attention.items()},
        )
