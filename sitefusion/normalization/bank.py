"""A bank of per-site normalizers with a policy for images of unseen sites.

One normalizer per site is fitted on that site's images only; a pooled normalizer is fitted on
the union of all sites (the "pooled" policy and the pooled-training baseline use it). An image of
a known site is normalized with its own site's parameters; an image of an unseen site (or with no
site) follows ``unseen_policy`` (``"nearest"``, ``"self"``, ``"pooled"``): how each policy
chooses, the signatures, and the checks of intensities a normalizer cannot represent are in
:mod:`~sitefusion.normalization.unseen`. Every result is a :class:`NormalizedImage` that says
which parameters were used and why.

Half of this module is the bank's artifact (``bank.json`` plus one file per site, each hashed,
with every field checked on load and every refusal naming the file and field).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sitefusion.atomic import sha256_file
from sitefusion.errors import ArtifactError, ConfigError, NotFittedError, UnknownChoiceError
from sitefusion.normalization.artifacts import read_json_artifact, write_json_atomic
from sitefusion.normalization.base import SiteNormalizer
from sitefusion.normalization.checks import as_image, require_image_iterable
from sitefusion.normalization.registry import canonical_kind, make_normalizer, normalizer_class
from sitefusion.normalization.unseen import (
    POOLED_SITE,
    SELF_SITE,
    UNSEEN_POLICIES,
    NormalizedImage,
    Policy,
    check_policy,
    degenerate_intensities,
    nearest,
    outside_fitted_range,
    signature_distances,
)

__all__ = [
    "BANK_FILE",
    "POOLED_FILE",
    "POOLED_SITE",
    "SELF_SITE",
    "UNSEEN_POLICIES",
    "NormalizedImage",
    "NormalizerBank",
    "Policy",
]

BANK_FILE = "bank.json"
"""Index file of a saved bank."""

POOLED_FILE = "_pooled.json"
"""File of the pooled normalizer in a saved bank."""

_FORMAT = "sitefusion.normalizer_bank"
_RESERVED_STEMS = frozenset({"bank", "_pooled"})


def _check_site_name(site: object, where: str) -> str:
    if not isinstance(site, str) or not site.strip():
        raise ValueError(f"{where}: site names must be non-empty strings, got {site!r}")
    if site in (POOLED_SITE, SELF_SITE):
        raise ValueError(f"{where}: site name {site!r} is reserved by NormalizerBank")
    return site


def site_file_names(sites: Iterable[str]) -> dict[str, str]:
    """Safe, distinct file names ``<site>.json`` for site names.

    Characters other than letters, digits, ``_`` and ``-`` become ``_``; a name that had to
    change, collides (case-insensitively) with another site or with ``bank`` / ``_pooled``, gets
    a short hash of the real site name appended, so the mapping stays one-to-one.
    """
    used: set[str] = set()
    names: dict[str, str] = {}
    for site in sites:
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", site)[:64]
        if stem != site or stem.casefold() in _RESERVED_STEMS or stem.casefold() in used:
            stem = f"{stem}-{hashlib.sha256(site.encode('utf-8')).hexdigest()[:10]}"
        used.add(stem.casefold())
        names[site] = f"{stem}.json"
    return names


class NormalizerBank:
    """Per-site normalizers of one kind plus a pooled one, and an unseen-site policy.

    ``NormalizerBank(kind="zscore", params=None, unseen_policy="nearest")`` validates and stores
    the normalizer kind (aliases such as ``"color"`` accepted; stored canonical), its keyword
    hyper-parameters (stored complete and JSON-safe, defaults filled in) and the policy.

    After :meth:`fit` (or :meth:`from_normalizers` / :meth:`load`): ``normalizers_``
    (site -> fitted normalizer, in fit order), ``pooled_`` (the normalizer fitted on the union of
    all sites' images), ``sites_`` and ``n_channels_``.
    """

    version: ClassVar[int] = 1

    normalizers_: dict[str, SiteNormalizer]
    pooled_: SiteNormalizer

    def __init__(
        self,
        kind: str = "zscore",
        params: Mapping[str, Any] | None = None,
        unseen_policy: str = "nearest",
    ) -> None:
        self.kind = canonical_kind(kind)
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(
                f"NormalizerBank: parameter 'params' must be a mapping of {self.kind!r} "
                f"hyper-parameters, got {params!r}"
            )
        self.params: dict[str, Any] = make_normalizer(self.kind, **dict(params or {})).get_params()
        self.unseen_policy = check_policy(unseen_policy)

    def __repr__(self) -> str:
        return (
            f"NormalizerBank(kind={self.kind!r}, params={self.params!r}, "
            f"unseen_policy={self.unseen_policy!r})"
        )

    # ------------------------------------------------------------------------ fitting

    def new_normalizer(self) -> SiteNormalizer:
        """An unfitted normalizer of the bank's kind and hyper-parameters."""
        return make_normalizer(self.kind, **self.params)

    def fit(self, images_by_site: Mapping[str, Iterable[object]]) -> NormalizerBank:
        """Fit one normalizer per site on that site's images only, plus the pooled one.

        ``images_by_site``: site name -> iterable (list or generator, iterated once) of
        channel-first images ``[C, H, W]`` / ``[C, D, H, W]``; every site must have at least one
        image and all images the same C. Returns ``self``.
        """
        if not isinstance(images_by_site, Mapping):
            raise ValueError(
                "NormalizerBank.fit expects a mapping site name -> images, got "
                f"{type(images_by_site).__name__}"
            )
        if not images_by_site:
            raise ValueError("NormalizerBank.fit: no sites given")
        normalizers: dict[str, SiteNormalizer] = {}
        pooled = self.new_normalizer().accumulator()
        for site, images in images_by_site.items():
            _check_site_name(site, "NormalizerBank.fit")
            require_image_iterable(images, f"NormalizerBank.fit (site {site!r})")
            own = self.new_normalizer().accumulator()
            for index, image in enumerate(images):
                label = f"site {site!r} image {index}"
                array = as_image(image, label)
                own.add(array, label)
                pooled.add(array, label)
            if own.n_images == 0:
                raise ValueError(f"NormalizerBank.fit: site {site!r} has no images")
            normalizers[site] = own.finish()
        self.normalizers_ = normalizers
        self.pooled_ = pooled.finish()
        return self

    @classmethod
    def from_normalizers(
        cls,
        normalizers: Mapping[str, SiteNormalizer],
        *,
        pooled: SiteNormalizer,
        unseen_policy: str = "nearest",
    ) -> NormalizerBank:
        """Build a fitted bank from already fitted normalizers (site -> normalizer).

        ``pooled`` is the normalizer fitted on the union of the sites' images. All must be
        fitted, of one kind, with identical hyper-parameters and channel count.
        """
        if not normalizers:
            raise ValueError("NormalizerBank.from_normalizers: no normalizers given")
        sites = list(normalizers)
        for site in sites:
            _check_site_name(site, "NormalizerBank.from_normalizers")
        first = normalizers[sites[0]]
        members = [(f"site {s!r}", normalizers[s]) for s in sites]
        members.append(("pooled", pooled))
        for name, normalizer in members:
            if not isinstance(normalizer, SiteNormalizer):
                raise ValueError(f"{name}: expected a SiteNormalizer, got {normalizer!r}")
            if not normalizer.is_fitted:
                raise NotFittedError(normalizer)
            if type(normalizer) is not type(first) or normalizer.get_params() != first.get_params():
                raise ValueError(
                    f"{name}: {normalizer!r} differs from site {sites[0]!r}'s {first!r}; a bank "
                    "holds normalizers of one kind with identical hyper-parameters"
                )
            if normalizer.n_channels_ != first.n_channels_:
                raise ValueError(
                    f"{name}: fitted on {normalizer.n_channels_}-channel images but site "
                    f"{sites[0]!r} on {first.n_channels_}-channel images"
                )
        bank = cls(first.kind, first.get_params(), check_policy(unseen_policy))
        bank.normalizers_ = dict(normalizers)
        bank.pooled_ = pooled
        return bank

    # --------------------------------------------------------------------- accessors

    def without(self, *sites: str) -> NormalizerBank:
        """A bank without ``sites`` (e.g. leave-one-site-out); images of those sites become unseen.

        The remaining normalizers are shared, not copied. ``pooled_`` is kept as is: it was
        fitted on every site, the removed ones included, and cannot be refitted without their
        images, so with ``unseen_policy="pooled"`` a removed site's images still meet
        statistics that saw that site; refit a bank on the remaining sites for a strictly
        held-out pooled normalizer.
        """
        self._require_fitted()
        for site in sites:
            if site not in self.normalizers_:
                raise UnknownChoiceError("site", site, self.normalizers_)
        remaining = {s: n for s, n in self.normalizers_.items() if s not in sites}
        if not remaining:
            raise ValueError(f"NormalizerBank.without{sites!r}: no site would remain")
        return NormalizerBank.from_normalizers(
            remaining, pooled=self.pooled_, unseen_policy=self.unseen_policy
        )

    def _require_fitted(self) -> None:
        if not hasattr(self, "normalizers_"):
            raise NotFittedError(self)

    @property
    def sites_(self) -> tuple[str, ...]:
        """The known sites, in fit order."""
        self._require_fitted()
        return tuple(self.normalizers_)

    @property
    def n_channels_(self) -> int:
        """Channel count C of the images the bank was fitted on."""
        self._require_fitted()
        return int(next(iter(self.normalizers_.values())).n_channels_)

    def __contains__(self, site: object) -> bool:
        return hasattr(self, "normalizers_") and site in self.normalizers_

    def __getitem__(self, site: str) -> SiteNormalizer:
        """The fitted normalizer of a known site (``UnknownChoiceError`` otherwise)."""
        self._require_fitted()
        if site not in self.normalizers_:
            raise UnknownChoiceError("site", site, self.normalizers_)
        return self.normalizers_[site]

    def site_distances(self, image: object) -> dict[str, float]:
        """Signature distance from ``image`` ``[C, ...]`` to every known site (smaller = closer).

        The distance is the mean absolute difference of the per-channel percentile signatures
        (``SiteNormalizer.signature``) in raw intensity units.
        """
        self._require_fitted()
        return signature_distances(self.normalizers_, image, self.n_channels_)

    def nearest_site(self, image: object) -> str:
        """The known site whose intensity signature is closest to ``image``'s (first on ties)."""
        return nearest(self.site_distances(image))

    def intensity_problem(self, image: object, normalized: NormalizedImage) -> str | None:
        """Why ``image`` lies where its normalizer cannot represent it, or ``None``.

        A site normalizer is fitted on one site's intensities and clips to them: an 8-bit image
        given to a run fitted on 16-bit CT, a blank image or one far outside the fitted range
        all become one (nearly) constant image, and then one confident prediction whose
        feature distance looks ordinary. Checked: a constant image; a normalized image that is
        constant although the raw one is not; most values outside the range of the site whose
        parameters were used (its 1st to 99th percentile, widened by that span on each side).
        """
        raw = np.asarray(image, dtype=np.float64)
        problem = degenerate_intensities(raw, normalized)
        if problem is not None:
            return problem
        fitted = self.normalizers_.get(normalized.site_used)
        if fitted is None:  # pooled or self-fitted parameters: nothing site-specific to check
            fitted = self.pooled_ if normalized.site_used == POOLED_SITE else None
        if fitted is None:
            return None
        return outside_fitted_range(raw, fitted, normalized.site_used)

    # --------------------------------------------------------------------- transform

    def transform(self, image: object, site: str | None = None) -> NormalizedImage:
        """Normalize one channel-first image of ``site`` (``None`` = unknown site).

        A known site uses its own normalizer (policy ``"known"``); otherwise ``unseen_policy``
        decides. Returns a :class:`NormalizedImage` with a float32 array of the input's shape.
        """
        self._require_fitted()
        if site is not None and site in self.normalizers_:
            return NormalizedImage(self.normalizers_[site].transform(image), site, "known", site)
        if self.unseen_policy == "nearest":
            chosen = self.nearest_site(image)
            array = self.normalizers_[chosen].transform(image)
            return NormalizedImage(array, chosen, "nearest", site)
        if self.unseen_policy == "self":
            own = self.new_normalizer().fit([image])
            return NormalizedImage(own.transform(image), SELF_SITE, "self", site)
        return NormalizedImage(self.pooled_.transform(image), POOLED_SITE, "pooled", site)

    def transform_batch(
        self, images: Iterable[object], site: str | None = None
    ) -> list[NormalizedImage]:
        """Normalize several images of one ``site``.

        Same as :meth:`transform` per image, except that the ``"self"`` policy fits ONE fresh
        normalizer on the whole batch (e.g. all images of a new study) and applies it to each.
        ``"nearest"`` still decides per image.
        """
        require_image_iterable(images, "NormalizerBank.transform_batch")
        self._require_fitted()
        batch = list(images)
        known = site is not None and site in self.normalizers_
        if known or self.unseen_policy != "self" or not batch:
            return [self.transform(image, site) for image in batch]
        own = self.new_normalizer().fit(batch)
        return [NormalizedImage(own.transform(im), SELF_SITE, "self", site) for im in batch]

    # ---------------------------------------------------------------------- artifacts

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``<site>.json`` per site, ``_pooled.json`` and the index ``bank.json``.

        Each file is written atomically; ``bank.json`` (kind, params, unseen_policy, version,
        sites with file names and SHA-256) is written last. Returns the directory.
        """
        self._require_fitted()
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        files = site_file_names(self.normalizers_)
        entries = []
        for site, normalizer in self.normalizers_.items():
            path = normalizer.save(root / files[site])
            entries.append({"site": site, "file": files[site], "sha256": sha256_file(path)})
        path = self.pooled_.save(root / POOLED_FILE)
        pooled_entry = {"file": POOLED_FILE, "sha256": sha256_file(path)}
        write_json_atomic(
            root / BANK_FILE,
            {
                "format": _FORMAT,
                "version": self.version,
                "kind": self.kind,
                "params": self.params,
                "unseen_policy": self.unseen_policy,
                "n_channels": self.n_channels_,
                "sites": entries,
                "pooled": pooled_entry,
            },
        )
        return root

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> NormalizerBank:
        """Rebuild a bank saved by :meth:`save`, checking every file against ``bank.json``.

        Raises :class:`ArtifactError` naming the file and field when the index is malformed or
        of another version, a member file is missing, fails its SHA-256 check, or does not
        match the bank's kind, parameters or channel count.
        """
        root = Path(directory)
        index_path = root / BANK_FILE
        index = read_json_artifact(index_path, "normalizer bank index")

        def fail(field: str, problem: str, path: Path = index_path) -> ArtifactError:
            return ArtifactError(f"{path}: field {field!r}: {problem}")

        required = ("format", "version", "kind", "params", "unseen_policy", "sites", "pooled")
        for key in required:
            if key not in index:
                raise fail(key, "missing from the bank index")
        if index["format"] != _FORMAT:
            raise fail("format", f"expected {_FORMAT!r}, found {index['format']!r}")
        if index["version"] != cls.version or isinstance(index["version"], bool):
            raise fail(
                "version",
                f"found {index['version']!r}; this sitefusion reads version {cls.version}",
            )
        try:
            template = cls(index["kind"], index["params"], index["unseen_policy"])
        except (ConfigError, UnknownChoiceError) as err:
            raise fail("kind/params/unseen_policy", str(err)) from err
        # A parameter missing from the index was added to sitefusion after the bank was saved:
        # it takes its default, which is what that sitefusion did.
        if not isinstance(index["params"], dict) or any(
            template.params[k] != v for k, v in index["params"].items()
        ):
            raise fail("params", "not a parameter set of its kind")
        sites = index["sites"]
        if not isinstance(sites, list) or not sites:
            raise fail("sites", "expected a non-empty list of {site, file, sha256} objects")

        def member(entry: object, field: str) -> SiteNormalizer:
            if not isinstance(entry, dict) or not {"file", "sha256"} <= set(entry):
                raise fail(field, "expected an object with 'file' and 'sha256'")
            name = entry["file"]
            if (
                not isinstance(name, str)
                or not name
                or Path(name).name != name
                or name
                in (
                    ".",
                    "..",
                )
            ):
                raise fail(f"{field}.file", f"expected a plain file name, found {name!r}")
            path = root / name
            if not path.is_file():
                raise fail(f"{field}.file", f"{name!r} does not exist in {root}")
            if sha256_file(path) != entry["sha256"]:
                raise fail(f"{field}.sha256", f"{name!r} fails its SHA-256 check")
            normalizer = normalizer_class(template.kind).load(path)
            if normalizer.get_params() != template.params:
                raise fail("params", "differs from bank.json's params", path)
            return normalizer

        normalizers: dict[str, SiteNormalizer] = {}
        for i, entry in enumerate(sites):
            site = entry.get("site") if isinstance(entry, dict) else None
            if not isinstance(site, str) or site in normalizers:
                raise fail(f"sites[{i}].site", f"expected a distinct site name, found {site!r}")
            normalizers[site] = member(entry, f"sites[{i}]")
        pooled = member(index["pooled"], "pooled")
        try:
            bank = cls.from_normalizers(
                normalizers, pooled=pooled, unseen_policy=template.unseen_policy
            )
        except ValueError as err:
            raise fail("sites", str(err)) from err
        if index.get("n_channels", bank.n_channels_) != bank.n_channels_:
            raise fail("n_channels", f"says {index['n_channels']!r}, files hold {bank.n_channels_}")
        return bank
