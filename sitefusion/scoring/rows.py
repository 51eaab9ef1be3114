"""The rows of one scoring batch: one fused pass over its images, then one row per item.

The batch is padded to a fixed size before the networks run (a convolution's result can depend
on the batch size); the fusion head runs once on the batch's items, and computes its linear
maps row by row (:func:`sitefusion.fusion.base.rowwise_linear`: a matrix product's blocking
changed an item's logits in the last bits with its place in the batch), and the OOD distance
is computed row by row, so a resumed batch gives the same rows as an uninterrupted one
(tests/scoring/test_scoring_rows.py guards the property). A row holds the fused probabilities and expert
weights, the OOD distance and flag (feature distance, or intensities the site normalizer
cannot represent, found by the reader) and, when asked, the paths of the item's Grad-CAM
explanation. An item the models refuse fails alone: the batch is retried item by item.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitefusion.errors import SiteFusionError
from sitefusion.methods import LoadedRun
from sitefusion.scoring.discovery import ScoreItem
from sitefusion.scoring.explain import GradCamExplainer
from sitefusion.scoring.outputs import printable
from sitefusion.scoring.reading import LoadedItem
from sitefusion.scoring.redaction import Redactor
from sitefusion.scoring.site_resolution import SiteResolution

__all__ = ["BatchScorer", "explanation_key", "redact_stored_row"]

_ROUND_PROB = 6
_ROUND_OOD = 4


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the batch's fusion head, then back to the caller's count.

    Each of the head's small operations opens an OpenMP parallel region; on two cores the
    team's start and barrier cost more than the arithmetic. On one thread no reduction is
    split between threads either, so its order is fixed.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:48] or "item"


def explanation_key(item: ScoreItem) -> str:
    """The stem of an item's explanation files: its redacted file name and its id."""
    name = Path(Redactor(item.identifiers)(item.input)).name
    return f"{_slug(name)}-{item.item_id[:10]}"


def redact_stored_row(row: dict[str, Any], item: ScoreItem, out: Path) -> dict[str, Any]:
    """A row journaled by an earlier call, redacted with what this batch knows.

    A batch redacts every path with the identifiers of every DICOM header it met; a row
    written before a header was known (the photos of a folder scored on their own first) may
    still hold a name. Its ``input`` and ``error`` are redacted again and its explanation
    files renamed to the names this batch would give them.
    """
    redact = Redactor(item.identifiers)
    row["input"] = printable(redact(item.input))  # as the journal wrote it
    if isinstance(row.get("error"), str):
        row["error"] = redact(row["error"])
    paths = row.get("explanation")
    if not isinstance(paths, list):
        return row
    marker = f"-{item.item_id[:10]}"
    renamed = []
    for rel in map(str, paths):
        name = Path(rel).name
        new = rel
        # Only the batch's own pictures (explain/<key>...) are renamed, never a path a
        # damaged journal could name elsewhere.
        if marker in name and Path(rel).parent == Path("explain"):
            new = f"explain/{explanation_key(item)}{name.split(marker, 1)[1]}"
        if new != rel and (out / rel).is_file():
            os.replace(out / rel, out / new)
        renamed.append(new)
    row["explanation"] = renamed
    return row


@dataclass(frozen=True)
class _BatchResult:
    """What the networks gave for the ``n`` items of one batch (padding removed):
    ``probs [n, K]``, ``weights [n, E]``, OOD ``distances [n]``, the normalizer used."""

    probs: np.ndarray
    weights: np.ndarray
    distances: np.ndarray
    norm_site: list[str]
    norm_policy: list[str]


@dataclass
class BatchScorer:
    """Scores the batches of one run's method: the run, the method, the OOD model, the output
    folder (for explanations) and whether to explain."""

    run: LoadedRun
    method: str
    ood: Any
    out: Path
    explain: bool
    _explainer: Any = None

    def _row(self, loaded: LoadedItem, key: str) -> dict[str, Any]:
        item = loaded.item
        redact = Redactor(item.identifiers)
        return {
            "input": redact(item.input),
            "status": "error" if loaded.error else "ok",
            "error": redact(loaded.error) if loaded.error else None,
            "run_id": self.run.run_id,
            "method": self.method,
            "temperature": self.run.temperature(self.method),
            "study_uid": loaded.study_uid,
            "series_uid": loaded.series_uid,
            "sop_uids": list(loaded.sop_uids) or None,
            "item": item.item_id,
            "input_sha256": item.content_sha256 or None,
            "score_key": key,
        }

    def score_batch(
        self,
        batch: list[LoadedItem],
        size: int,
        keys: dict[str, str],
        finished: Callable[[dict[str, Any]], None],
    ) -> None:
        """Predict the readable items of one batch and hand every item's row to ``finished``."""
        ready = [b for b in batch if b.array is not None]
        for b in batch:
            if b.array is None:
                finished(self._row(b, keys[b.item.item_id]))
        if not ready:
            return
        try:
            preds = self._predict(ready, size)
        except Exception:  # e.g. a normalizer refusing a degenerate image: find which one
            for b in ready:
                try:
                    single = self._predict([b], size)
                except Exception as err:
                    b.error = (
                        f"{b.item.input}: prediction failed: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}"
                    )
                    finished(self._row(b, keys[b.item.item_id]))
                else:
                    finished(self._scored_row(b, 0, single, keys[b.item.item_id]))
            return
        for i, b in enumerate(ready):
            finished(self._scored_row(b, i, preds, keys[b.item.item_id]))

    def _predict(self, ready: list[LoadedItem], size: int) -> _BatchResult:
        """Every network of the scored fusion on ``ready`` (conformed, normalized) items, in
        their order: probabilities (temperature-scaled), expert weights, OOD distances.

        The batch is padded to ``size`` with copies of its first image, so no network's output
        depends on how many items share the batch.
        """
        arrays = [b.array for b in ready if b.array is not None]
        normalized = [b.normalized for b in ready if b.normalized is not None]
        if len(arrays) != len(ready) or len(normalized) != len(ready):
            raise SiteFusionError("an unread item reached the networks")
        sites = [b.resolution.site if b.resolution else None for b in ready]
        pad = size - len(arrays)
        images = np.stack(arrays + [arrays[0]] * pad)
        # Only the experts and the scored fusion: scoring reads nothing else.
        preds = self.run.predict(
            images,
            sites + [sites[0]] * pad,
            batch_size=size,
            methods=[self.method],
            normalized=normalized + [normalized[0]] * pad,
        )
        if preds.features is None:
            raise SiteFusionError(f"{self.method} gave no expert outputs")
        n = len(ready)
        with _one_torch_thread():
            # Once for the batch: the head computes its linear maps row by row
            # (sitefusion.fusion.base.rowwise_linear), so an item's result does not depend on
            # its place in the batch or its companions.
            fused = self.run.predict_rows(preds, slice(0, n), self.method, calibrated=True)
        if fused is None or fused.weights is None:
            raise SiteFusionError(f"{self.method} gave no prediction")
        return _BatchResult(
            probs=np.asarray(fused.probs, np.float64),
            weights=np.asarray(fused.weights, np.float64),
            distances=self.ood.score(preds.features.features[:n]),  # row by row
            norm_site=preds.norm_site[:n],
            norm_policy=preds.norm_policy[:n],
        )

    def _scored_row(self, b: LoadedItem, i: int, preds: _BatchResult, key: str) -> dict[str, Any]:
        probs, weights = preds.probs[i], preds.weights[i]
        distance = float(preds.distances[i])
        # Intensities the normalizer cannot represent come first: such an image is flagged
        # whatever its feature distance (which a constant image can make look ordinary).
        intensity = b.intensity
        far = distance > self.ood.threshold_
        reason = intensity or (
            f"feature distance {distance:.4g} above the run's threshold {self.ood.threshold_:.4g}"
            if far
            else None
        )
        k = int(np.argmax(probs))
        row = self._row(b, key)
        resolution = b.resolution or SiteResolution(None, "unseen-policy")
        row.update(
            {
                "prediction": self.run.classes[k],
                **{
                    f"prob_{c}": round(float(p), _ROUND_PROB)
                    for c, p in zip(self.run.classes, probs, strict=True)
                },
                **{
                    f"weight_{s}": round(float(w), _ROUND_PROB)
                    for s, w in zip(self.run.expert_sites, weights, strict=True)
                },
                "site": resolution.site,
                "site_source": resolution.source,
                "norm_site": preds.norm_site[i],
                "norm_policy": preds.norm_policy[i],
                "ood_score": round(distance, _ROUND_OOD),
                "ood_flag": bool(far or intensity),
                "ood_reason": reason,
            }
        )
        if self.explain:
            try:
                row["explanation"] = self._explain(b, weights, k, probs)
            except Exception as err:  # the score stands without its picture
                row["error"] = Redactor(b.item.identifiers)(
                    f"{b.item.input}: explanation failed: {type(err).__name__}: {err}"
                )
        return row

    def _explain(self, b: LoadedItem, weights: np.ndarray, k: int, probs: np.ndarray) -> list[str]:
        if self._explainer is None:
            # The fusion's own (fine-tuned) expert copies where it has them: those are the
            # networks whose weights the fusion relied on.
            self._explainer = GradCamExplainer(
                self.run.fusion(self.method).networks or self.run.experts,
                self.run.expert_sites,
                self.run.classes,
                (self.run.channels, *self.run.spatial_size),
            )
        if b.array is None or b.normalized is None:
            raise SiteFusionError("no image to explain")
        image = b.array
        normalized = b.normalized.array
        key = explanation_key(b.item)
        paths: list[str] = self._explainer.explain(
            self.out,
            key,
            image=image,
            normalized=normalized,
            weights=weights,
            class_index=k,
            probability=float(probs[k]),
        )
        return paths
