"""The rows of a batch: an item's row does not depend on its place in the batch, on its
companions or on being scored alone, and normalizing in the reader threads changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sitefusion.methods import FUSION_METHOD_NAMES, LoadedRun
from sitefusion.normalization import NormalizerBank
from sitefusion.scoring import score_inputs
from sitefusion.scoring.discovery import discover_items
from sitefusion.scoring.ood import run_ood
from sitefusion.scoring.reading import ItemReader, LoadedItem
from sitefusion.scoring.rows import BatchScorer

SIZE = 4


@pytest.fixture(scope="module")
def loaded(scoring_run: Path, synthetic_pngs: list[Path]) -> tuple[BatchScorer, list[LoadedItem]]:
    run = LoadedRun(scoring_run, methods=FUSION_METHOD_NAMES.values())
    method = run.fusion().name
    scorer = BatchScorer(
        run=run, method=method, ood=run_ood(run, 0.99), out=Path("unused"), explain=False
    )
    reader = ItemReader(run=run, site=None, site_map={}, convert_colour=False)
    items = discover_items(synthetic_pngs, volumetric=False, workers=1).items
    return scorer, [reader.load(it) for it in items]


def _result(scorer: BatchScorer, batch: list[LoadedItem], i: int) -> tuple[Any, ...]:
    res = scorer._predict(batch, SIZE)
    return res.probs[i], res.weights[i], res.distances[i], res.norm_site[i]


def test_an_items_result_is_the_same_at_any_place_with_any_companions(
    loaded: tuple[BatchScorer, list[LoadedItem]],
) -> None:
    scorer, items = loaded
    target = items[0]
    reference = _result(scorer, [target], 0)  # alone, padded with copies of itself
    for batch, i in (
        ([items[1], items[2], target], 2),
        ([items[3], target, items[4], items[5]], 1),
        ([items[5], items[4], items[3], target], 3),
    ):
        got = _result(scorer, batch, i)
        for a, b in zip(got, reference, strict=True):
            np.testing.assert_array_equal(a, b)


def test_rows_equal_the_runs_own_prediction_bit_for_bit(
    loaded: tuple[BatchScorer, list[LoadedItem]],
) -> None:
    """The reader's normalization, the batch's single-threaded head and OOD distances give
    what ``LoadedRun.predict``, ``predict_rows`` of each item alone (on torch's threads) and
    ``MahalanobisOOD.score`` give on their own (scorer version 4)."""
    scorer, items = loaded
    run, method = scorer.run, scorer.method
    batch = items[:3]
    threads = torch.get_num_threads()
    res = scorer._predict(batch, SIZE)
    assert torch.get_num_threads() == threads  # restored after the heads
    arrays = [b.array for b in batch if b.array is not None]
    images = np.stack(arrays + arrays[:1])  # padded to SIZE as the scorer pads
    preds = run.predict(images, [None] * SIZE, batch_size=SIZE, methods=[method])
    assert preds.features is not None
    for i in range(len(batch)):
        one = run.predict_rows(preds, slice(i, i + 1), method, calibrated=True)
        assert one is not None and one.weights is not None
        np.testing.assert_array_equal(res.probs[i], one.probs[0])
        np.testing.assert_array_equal(res.weights[i], one.weights[0])
        distance = scorer.ood.score(preds.features.features[i : i + 1])[0]
        assert res.distances[i] == distance
        assert res.norm_site[i] == preds.norm_site[i]


def test_a_normalizer_refusing_an_image_fails_that_item_alone(
    scoring_run: Path,
    synthetic_pngs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Normalization moved into the reader threads; a refusal still words the item's error as
    a failed prediction and leaves the other items of its batch scored."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    for i, png in enumerate(synthetic_pngs[:3]):
        (folder / f"img_{i}.png").write_bytes(png.read_bytes())
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(folder / "img_1b_black.png")
    original = NormalizerBank.transform

    def picky(self: NormalizerBank, image: Any, site: str | None = None) -> Any:
        if not np.asarray(image).any():
            raise ValueError("cannot normalize\nsecond line")
        return original(self, image, site)

    monkeypatch.setattr(NormalizerBank, "transform", picky)
    summary = score_inputs(scoring_run, [folder], tmp_path / "out")
    assert (summary.ok, summary.errors) == (3, 1)
    rows = (tmp_path / "out" / "scores.csv").read_text()
    assert "img_1b_black.png: prediction failed: ValueError: cannot normalize," in rows
