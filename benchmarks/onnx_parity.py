"""Parity of the ONNX export with sitefusion's PyTorch scoring path, on a run's real test images.

Exports the run (``sitefusion export``), then for each of ``--n`` test-split images (spread over
the sites) compares:

* *known site*: sitefusion's path (``read_image`` -> ``conform`` -> ``LoadedRun.predict`` with the
  image's site -> the fusion per item, temperature-scaled, as ``sitefusion score`` does) against
  the exported runner (its own reading, resizing and normalization in numpy, then onnxruntime);
* *unseen site*: the same without a site, so both follow the run's unseen-site policy.

Prints the largest |difference| of probabilities and of expert weights, how often the two
chose a different normalizer site or class, and (unseen site) how often the policy picked the
image's own site.

Run: ``.venv/bin/python benchmarks/onnx_parity.py runs/ham --n 200`` (from the project root, so
that the run's relative ``data.root`` resolves; or pass ``--data-root``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from sitefusion.data import conform
from sitefusion.export import export_run
from sitefusion.io import read_image
from sitefusion.methods import LoadedRun


def _runner(folder: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("exported_runner", folder / "run_model.py")
    assert spec is not None and spec.loader is not None  # a file we just wrote
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    """Export, compare, print one Markdown row per comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    run = LoadedRun(args.run)
    root = args.data_root or Path(run.cfg.data.root)
    pattern = run.schema["columns"]["image"]
    with (args.run / "splits.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    rng = np.random.default_rng(0)
    chosen = [rows[i] for i in sorted(rng.choice(len(rows), min(args.n, len(rows)), False))]
    if "{" in pattern:
        paths = [root / pattern.format(image_id=r["id"]) for r in chosen]
    else:  # a manifest column of paths: read it from the run's data manifest
        with (root / run.cfg.data.manifest).open(newline="") as fh:
            by_id = {r[run.cfg.data.id or "image"]: r[pattern] for r in csv.DictReader(fh)}
        paths = [root / by_id[r["id"]] for r in chosen]
    sites = [r["site"] for r in chosen]
    images = np.stack(
        [conform(read_image(p).array, run.spatial_size, run.channels, path=p) for p in paths]
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = export_run(args.run, tmp)
        exported = _runner(Path(tmp))
        model = exported.ExportedModel(Path(tmp))
        print(f"export self-check: {result.max_abs_diff:.2e} on {result.checked_images} images")
        print(
            "| run | images | sites | max abs diff probs | max abs diff weights | "
            "norm site differs | class differs | own site's parameters |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for label, given in (("known site", sites), ("unseen site", [None] * len(sites))):
            preds = run.predict(images, given, methods=[result.method])
            dp = dw = 0.0
            site_diff = class_diff = own = 0
            for i, path in enumerate(paths):
                ref = run.predict_rows(preds, slice(i, i + 1), result.method, calibrated=True)
                assert ref is not None and ref.weights is not None
                x, used, _ = exported.preprocess(exported.read_image(path), given[i], model.pre)
                probs, weights = model.run(x[None])
                dp = max(dp, float(np.abs(probs[0] - ref.probs[0]).max()))
                dw = max(dw, float(np.abs(weights[0] - ref.weights[0]).max()))
                site_diff += used != preds.norm_site[i]
                own += used == sites[i]
                class_diff += int(np.argmax(probs[0]) != np.argmax(ref.probs[0]))
            print(
                f"| {args.run} ({label}) | {len(paths)} | {len(set(sites))} | {dp:.2e} | "
                f"{dw:.2e} | {site_diff} | {class_diff} | {own}/{len(paths)} |"
            )


if __name__ == "__main__":
    main()
