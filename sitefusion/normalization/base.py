"""The site-normalizer contract shared by every intensity normalizer.

A :class:`SiteNormalizer` follows the scikit-learn estimator contract:

* ``__init__`` only validates and stores keyword hyper-parameters;
* ``fit(images)`` learns from ONE site's training images and sets attributes ending in ``_``;
* ``transform(image)`` maps one image and raises :class:`~sitefusion.errors.NotFittedError`
  before ``fit``;
* ``save(path)`` / ``load(path)`` write and read a versioned JSON artifact
  ``{"kind", "version", "params", "fitted"}``.

Images are channel-first numpy arrays ``[C, H, W]`` (2D) or ``[C, D, H, W]`` (3D) of any real
dtype; every normalizer works per channel and returns ``float32`` of the input's shape.

Fitting never holds a whole site in memory: each image contributes at most
``samples_per_image`` pixel positions (all channels of the same positions), drawn with a
``numpy.random.Generator`` seeded from the ``seed`` hyper-parameter, so fitting is
deterministic for a given image order.

The contract is in one place (sampled fitting, the not-fitted error, the versioned JSON
artifact and its checks on load), so that the four normalizer kinds are only their formulas; the
checks of images and hyper-parameters are in :mod:`~sitefusion.normalization.checks`, the JSON
file itself in :mod:`~sitefusion.normalization.artifacts`.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from sitefusion.atomic import sha256_file
from sitefusion.errors import ArtifactError, ConfigError, NotFittedError
from sitefusion.normalization.artifacts import jsonable, read_json_artifact, write_json_atomic
from sitefusion.normalization.checks import (
    FloatArray,
    as_image,
    check_int,
    require_image_iterable,
)

# as_image, read_json_artifact, sha256_file and write_json_atomic were defined or re-exported
# here before the checks and the artifact I/O had modules of their own; they stay importable.
__all__ = [
    "SIGNATURE_LEVELS",
    "FitAccumulator",
    "SiteNormalizer",
    "as_image",
    "read_json_artifact",
    "sha256_file",
    "write_json_atomic",
]

SIGNATURE_LEVELS: tuple[float, ...] = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0)
"""Percentile levels of the intensity signature ``[C, len(SIGNATURE_LEVELS)]``."""

_COMMON_FITTED = ("n_images_", "n_channels_", "signature_")

N = TypeVar("N", bound="SiteNormalizer")


# ---------------------------------------------------------------------------- accumulator


class FitAccumulator:
    """Streams images into one normalizer's fit, one image at a time.

    ``SiteNormalizer.fit`` is ``acc = normalizer.accumulator(); acc.add(...) ...;
    acc.finish()``. Exposed so that :class:`~sitefusion.normalization.bank.NormalizerBank` can
    feed each image to its site's normalizer and to the pooled one in a single pass over a
    generator. Per image it keeps only a pixel subsample ``[C, <= samples_per_image]``
    (float32) and the normalizer's small per-image statistics.
    """

    def __init__(self, normalizer: SiteNormalizer) -> None:
        self._normalizer = normalizer
        self._rng = np.random.default_rng(normalizer.seed)
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._stats: list[Any] = []
        self._n_channels: int | None = None
        self._first_label = ""
        self._finished = False

    @property
    def n_images(self) -> int:
        """Images added so far."""
        return len(self._chunks)

    def add(self, image: object, label: str | None = None) -> None:
        """Add one channel-first image; ``label`` names it in errors (default ``image <i>``)."""
        if self._finished:
            raise RuntimeError("FitAccumulator.add() after finish()")
        label = label if label is not None else f"image {len(self._chunks)}"
        x = as_image(image, label)
        channels = int(x.shape[0])
        if self._n_channels is None:
            self._normalizer._check_fit_channels(channels, label)
            self._n_channels = channels
            self._first_label = label
        elif channels != self._n_channels:
            raise ValueError(
                f"{label}: has {channels} channel(s) but {self._first_label} has "
                f"{self._n_channels}; all images fitted together must share the channel count"
            )
        flat = x.reshape(channels, -1)
        limit = self._normalizer.samples_per_image
        if flat.shape[1] > limit:
            # The same pixel positions for every channel, so colour triplets stay intact.
            index = np.sort(self._rng.choice(flat.shape[1], size=limit, replace=False))
            flat = flat[:, index]
        self._chunks.append(flat.astype(np.float32))
        self._stats.append(self._normalizer._image_stats(x))

    def finish(self) -> SiteNormalizer:
        """Fit the normalizer on everything added and return it (raises if nothing was added)."""
        normalizer = self._normalizer
        if self._n_channels is None:
            raise ValueError(
                f"{type(normalizer).__name__}.fit: no images given; fit needs at least one "
                "channel-first image of the site's training split"
            )
        samples = np.concatenate(self._chunks, axis=1).astype(np.float64)
        fitted = dict(normalizer._fit_samples(samples, self._stats))
        fitted["signature_"] = np.percentile(samples, SIGNATURE_LEVELS, axis=1).T
        fitted["n_channels_"] = self._n_channels
        fitted["n_images_"] = len(self._chunks)
        # Set everything at the end: a failed refit leaves the previous state intact.
        for name, value in fitted.items():
            setattr(normalizer, name, value)
        self._finished = True
        self._chunks, self._stats = [], []
        return normalizer


# ------------------------------------------------------------------------------ base class


class SiteNormalizer(ABC):
    """Abstract per-site intensity normalizer (scikit-learn estimator contract).

    Class attributes: ``kind`` (registry name, also the ``"kind"`` of the JSON artifact) and
    ``version`` (format version of the artifact; ``load`` refuses any other).

    Hyper-parameters common to every kind (keyword-only):

    * ``seed`` (int >= 0): seeds the pixel subsampling of ``fit``.
    * ``samples_per_image`` (int >= 1, default 20000): at most this many pixel positions per
      image (all channels) are kept for fitting.

    Fitted attributes common to every kind: ``n_images_`` (int), ``n_channels_`` (int) and
    ``signature_`` (``[C, 9]`` float64: per-channel percentiles at :data:`SIGNATURE_LEVELS` of
    the raw, un-normalized intensities of the fitted images, used to pick the nearest site for
    an image of an unseen site).
    """

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    n_images_: int
    n_channels_: int
    signature_: FloatArray

    def __init__(self, *, seed: int = 0, samples_per_image: int = 20_000) -> None:
        owner = type(self).__name__
        self.seed = check_int(owner, "seed", seed, 0)
        self.samples_per_image = check_int(owner, "samples_per_image", samples_per_image, 1)

    # ----------------------------------------------------------------- subclass hooks

    def _check_fit_channels(self, n_channels: int, label: str) -> None:
        """Refuse a channel count the kind cannot handle (default: any count is fine)."""
        return None

    def _image_stats(self, image: FloatArray) -> Any:
        """Per-image statistics kept during fit (``image`` is float64 ``[C, ...]``)."""
        return None

    @abstractmethod
    def _fit_samples(self, samples: FloatArray, image_stats: list[Any]) -> Mapping[str, Any]:
        """Return the kind's fitted attributes from pooled samples ``[C, N]`` and image stats."""

    @abstractmethod
    def _fitted_shapes(self, n_channels: int) -> dict[str, tuple[int, ...]]:
        """Expected shape of each kind-specific fitted attribute; ``()`` means a float."""

    @abstractmethod
    def _transform(self, image: FloatArray) -> FloatArray:
        """Map a validated float64 image ``[C, ...]`` with the fitted state."""

    def _check_transform_input(self, image: FloatArray, label: str) -> None:
        """Extra per-kind checks of a transform input (default: none)."""
        return None

    # ---------------------------------------------------------------------- contract

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            p.name
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters as a JSON-safe dict (tuples become lists); ``cls(**p)`` rebuilds."""
        return {name: jsonable(getattr(self, name)) for name in self._param_names()}

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``load``) has set the fitted state."""
        return hasattr(self, "n_channels_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(self)

    def fitted_state(self) -> dict[str, Any]:
        """The fitted attributes (names ending in ``_``) as a JSON-safe dict."""
        self._require_fitted()
        names = [*_COMMON_FITTED, *self._fitted_shapes(int(self.n_channels_))]
        return {name: jsonable(getattr(self, name)) for name in names}

    def accumulator(self) -> FitAccumulator:
        """A :class:`FitAccumulator` that fits this normalizer image by image."""
        return FitAccumulator(self)

    def fit(self: N, images: Iterable[object]) -> N:
        """Learn the site's normalization from ``images`` and return ``self``.

        ``images``: an iterable (list or generator, iterated once) of channel-first arrays
        ``[C, H, W]`` or ``[C, D, H, W]`` from ONE site's training split, all with the same C.
        """
        require_image_iterable(images, f"{type(self).__name__}.fit")
        acc = self.accumulator()
        for image in images:
            acc.add(image)
        acc.finish()
        return self

    def transform(self, image: object) -> npt.NDArray[np.float32]:
        """Normalize one channel-first image; returns float32 of the same shape.

        Raises :class:`NotFittedError` before ``fit`` and ``ValueError`` when the channel
        count differs from the fitted images'.
        """
        self._require_fitted()
        x = as_image(image)
        if x.shape[0] != self.n_channels_:
            raise ValueError(
                f"image has {x.shape[0]} channel(s) but {type(self).__name__} was fitted on "
                f"{self.n_channels_}-channel images (shape {tuple(x.shape)}, channel-first)"
            )
        self._check_transform_input(x, "image")
        return np.asarray(self._transform(x), dtype=np.float32).reshape(x.shape)

    def fit_transform(self, images: Iterable[object]) -> list[npt.NDArray[np.float32]]:
        """``fit`` on ``images`` then transform each of them; returns a list of float32 arrays."""
        require_image_iterable(images, f"{type(self).__name__}.fit_transform")
        batch = list(images)
        self.fit(batch)
        return [self.transform(image) for image in batch]

    @staticmethod
    def signature(image: object) -> FloatArray:
        """Intensity signature of one image: ``[C, 9]`` per-channel percentiles at
        :data:`SIGNATURE_LEVELS` of its raw intensities (all pixels)."""
        x = as_image(image)
        return np.asarray(
            np.percentile(x.reshape(x.shape[0], -1), SIGNATURE_LEVELS, axis=1).T,
            dtype=np.float64,
        )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._param_names())
        return f"{type(self).__name__}({params})"

    # -------------------------------------------------------------------- artifacts

    def to_dict(self) -> dict[str, Any]:
        """The artifact payload ``{"kind", "version", "params", "fitted"}`` (JSON-safe)."""
        return {
            "kind": self.kind,
            "version": self.version,
            "params": self.get_params(),
            "fitted": self.fitted_state(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted normalizer as versioned JSON, atomically; returns the path."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls: type[N], path: str | os.PathLike[str]) -> N:
        """Rebuild a normalizer saved by :meth:`save`.

        Raises :class:`ArtifactError` naming the file and the field when the JSON is
        malformed, of another kind or version, or its fitted state is inconsistent. To load a
        file of any kind, use :func:`sitefusion.normalization.load_normalizer`, which dispatches
        on the file's kind.
        """
        return cls.from_dict(read_json_artifact(path, "normalizer artifact"), source=path)

    @classmethod
    def from_dict(cls: type[N], payload: Mapping[str, Any], source: object = "<dict>") -> N:
        """Rebuild from a payload as written by :meth:`to_dict`; errors name ``source``."""

        def fail(field: str, problem: str) -> ArtifactError:
            return ArtifactError(f"{source}: field {field!r}: {problem}")

        for key in ("kind", "version", "params", "fitted"):
            if key not in payload:
                raise fail(key, "missing from the normalizer artifact")
        if payload["kind"] != cls.kind:
            raise fail("kind", f"expected {cls.kind!r}, found {payload['kind']!r}")
        version = payload["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version != cls.version:
            raise fail(
                "version",
                f"found {version!r}; this sitefusion reads version {cls.version} of "
                f"{cls.kind!r} normalizers",
            )
        params, fitted = payload["params"], payload["fitted"]
        if not isinstance(params, dict):
            raise fail("params", f"expected an object, found {type(params).__name__}")
        if not isinstance(fitted, dict):
            raise fail("fitted", f"expected an object, found {type(fitted).__name__}")
        unknown = sorted(set(params) - set(cls._param_names()))
        if unknown:
            raise fail(f"params.{unknown[0]}", f"unknown parameter of {cls.kind!r} normalizers")
        try:
            normalizer = cls(**params)
        except ConfigError as err:
            raise fail("params", str(err)) from err
        normalizer._set_fitted_state(fitted, fail)
        return normalizer

    def _set_fitted_state(self, fitted: Mapping[str, Any], fail: Any) -> None:
        for name in ("n_channels_", "n_images_"):
            value = fitted.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(f"fitted.{name}", f"expected an integer >= 1, found {value!r}")
        n_channels = int(fitted["n_channels_"])
        try:
            self._check_fit_channels(n_channels, "fitted state")
        except ValueError as err:
            raise fail("fitted.n_channels_", str(err)) from err
        shapes: dict[str, tuple[int, ...]] = {"signature_": (n_channels, len(SIGNATURE_LEVELS))}
        shapes.update(self._fitted_shapes(n_channels))
        unknown = sorted(set(fitted) - set(shapes) - {"n_channels_", "n_images_"})
        if unknown:
            raise fail(f"fitted.{unknown[0]}", f"unknown fitted attribute of {self.kind!r}")
        values: dict[str, Any] = {}
        for name, shape in shapes.items():
            if name not in fitted:
                raise fail(f"fitted.{name}", "missing")
            raw = fitted[name]
            try:
                array = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise fail(f"fitted.{name}", f"not numeric: {err}") from err
            if array.shape != shape or not np.isfinite(array).all():
                raise fail(
                    f"fitted.{name}",
                    f"expected finite numbers of shape {list(shape)}, found shape "
                    f"{list(array.shape)}",
                )
            values[name] = float(array) if shape == () else array
        values["n_channels_"] = n_channels
        values["n_images_"] = int(fitted["n_images_"])
        problem = self._validate_fitted(values)
        if problem is not None:
            field, message = problem
            raise fail(f"fitted.{field}", message)
        for name, value in values.items():
            setattr(self, name, value)

    def _validate_fitted(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        """Kind-specific consistency check of a loaded state: ``(field, problem)`` or None."""
        return None
