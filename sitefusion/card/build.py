"""Build a model card (a JSON document) from a run's facts and, optionally, its evaluation.

The sections follow "Model Cards for Model Reporting" (Mitchell et al., FAT* 2019): model
details, intended use, factors, metrics, evaluation data, training data, quantitative analyses,
ethical considerations, caveats and recommendations; the software and weight records follow
the ideas of MONAI bundles' ``metadata.json`` (versions, inputs, outputs). Every number is read
from the run directory or from the report's ``metrics.json``; the known limitations are
computed from the counts, not written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sitefusion.card.about import About, read_about
from sitefusion.card.facts import RunFacts, read_run_facts
from sitefusion.errors import ArtifactError
from sitefusion.evaluation.method_families import FUSION, family_of_method
from sitefusion.rundir.environment import package_version

__all__ = ["CARD_FORMAT", "CARD_VERSION", "LimitThresholds", "build_model_card"]

CARD_FORMAT = "sitefusion.model_card"
CARD_VERSION = 1

_METRICS = ("balanced_accuracy", "macro_auc", "accuracy", "ece", "brier")


class LimitThresholds:
    """Counts below which a site's figures are flagged as a known limitation.

    ``min_test_images``: a site's test images (fewer give wide confidence intervals);
    ``min_training_images``: the images its expert learned from (train + validation);
    ``min_class_images``: a class's images at a site that the models learned from (fewer: the
    class is rare there).
    """

    def __init__(
        self, min_test_images: int = 100, min_training_images: int = 300, min_class_images: int = 10
    ) -> None:
        self.min_test_images = min_test_images
        self.min_training_images = min_training_images
        self.min_class_images = min_class_images


def _policy_text(policy: str) -> str:
    return {
        "nearest": "an image of a site the run does not know is normalized with the parameters "
        "of the known site whose intensity percentiles are closest to the image's",
        "self": "an image of a site the run does not know is normalized with parameters fitted "
        "on that image (or batch) alone",
        "pooled": "an image of a site the run does not know is normalized with parameters "
        "fitted on every site's training images together",
    }[policy]


def _intended_use(told: About, classes: list[str], channels: int) -> dict[str, list[str]]:
    defaults = {
        "primary_uses": [
            f"research decision support: ranking the likelihood of {', '.join(classes)} "
            "for one image, with the expert weights that drove it",
            "per-site comparison of fusion against pooled, federated and local training",
        ],
        "primary_users": [
            "clinical researchers evaluating multi-site models",
            "radiologists or dermatologists reviewing batch scores as a second reader",
            "ML engineers retraining or auditing the pipeline",
        ],
        "out_of_scope": [
            "stand-alone diagnosis or any use without a clinician's review",
            "classes other than the listed ones: every image gets one of them",
            f"images of another modality, channel count than {channels} or dimensionality "
            "than the run's",
            "sites not listed below without a local evaluation first",
        ],
    }
    return {k: told.lists.get(k, v) for k, v in defaults.items()}


def _initial_weights(facts: RunFacts) -> dict[str, Any]:
    pre = facts.manifest.get("pretrained")
    if isinstance(pre, Mapping):
        source = (
            f"package {pre.get('package')} {pre.get('version')}, file {pre.get('file')}"
            if pre.get("kind") == "package"
            else f"file {pre.get('path') or pre.get('file')}"
        )
        return {
            "source": source,
            "pretrained": facts.cfg.expert.pretrained,
            "sha256": pre.get("sha256"),
            "not_loaded": list(pre.get("not_loaded") or []),
            "run_file": "experts/init.safetensors",
            "run_file_sha256": facts.init_sha256,
        }
    return {
        "source": f"random initialisation seeded with {facts.cfg.seed} (no pretrained weights)",
        "pretrained": None,
        "sha256": None,
        "not_loaded": [],
        "run_file": "experts/init.safetensors",
        "run_file_sha256": facts.init_sha256,
    }


def _training_data(facts: RunFacts) -> list[dict[str, Any]]:
    return [
        {
            "site": s.site,
            "has_expert": s.site in facts.experts,
            "images": {**s.images, "total": sum(s.images.values())},
            "groups": s.groups,
            "class_counts": s.classes,
            "class_mix": {
                c: round(n / max(1, sum(s.classes.values())), 4) for c, n in s.classes.items()
            },
        }
        for s in facts.sites
    ]


def _limitations(facts: RunFacts, limits: LimitThresholds) -> list[dict[str, Any]]:
    """Known limitations computed from the counts (and nothing else)."""
    found: list[dict[str, Any]] = []
    for s in facts.sites:
        learned = s.images["train"] + s.images["val"]
        if s.images["test"] < limits.min_test_images:
            found.append(
                {
                    "kind": "few_test_images",
                    "site": s.site,
                    "count": s.images["test"],
                    "text": f"{s.site} has {s.images['test']} test images (fewer than "
                    f"{limits.min_test_images}): its figures have wide confidence intervals",
                }
            )
        if learned < limits.min_training_images:
            found.append(
                {
                    "kind": "few_training_images",
                    "site": s.site,
                    "count": learned,
                    "text": f"{s.site}'s expert learned from {learned} images (fewer than "
                    f"{limits.min_training_images})",
                }
            )
        for cls, n in s.learned_classes.items():
            if n == 0:
                found.append(
                    {
                        "kind": "class_never_seen",
                        "site": s.site,
                        "class": cls,
                        "count": 0,
                        "text": f"class {cls} never occurs in {s.site}'s training data: its "
                        f"expert has no example of it",
                    }
                )
            elif n < limits.min_class_images:
                found.append(
                    {
                        "kind": "rare_class",
                        "site": s.site,
                        "class": cls,
                        "count": n,
                        "text": f"class {cls} has {n} training image{'s' if n > 1 else ''} at "
                        f"{s.site} (fewer than {limits.min_class_images})",
                    }
                )
        untested = [c for c, n in s.test_classes.items() if n == 0]
        if untested:
            found.append(
                {
                    "kind": "class_not_tested",
                    "site": s.site,
                    "classes": untested,
                    "count": 0,
                    "text": f"{s.site}'s test split holds no image of {', '.join(untested)}: "
                    f"sensitivity to {'these classes' if len(untested) > 1 else 'it'} is not "
                    "measured there",
                }
            )
    return found


def _metric(entry: Any, where: str) -> dict[str, Any] | None:
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or "value" not in entry:
        raise ArtifactError(f"{where}: expected {{'value', 'ci95'}}, got {entry!r}")
    ci = entry.get("ci95")
    return {"value": entry["value"], "ci95": list(ci) if ci is not None else None}


def _performance(facts: RunFacts, report_dir: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    source = report_dir / "metrics.json"
    run_info = metrics.get("run") or {}
    if run_info.get("run_id") not in (None, facts.manifest.get("run_id")):
        raise ArtifactError(
            f"{source}: field 'run.run_id' is {run_info.get('run_id')!r}; the run in "
            f"{facts.root} is {facts.manifest.get('run_id')!r} (a report of another run)"
        )
    method = facts.fusion_name
    entry = (metrics.get("methods") or {}).get(method)
    if not isinstance(entry, Mapping):
        raise ArtifactError(f"{source}: field 'methods.{method}' is missing")
    settings = metrics.get("settings") or {}
    per_site = []
    for site, values in (entry.get("per_site") or {}).items():
        where = f"{source}: field 'methods.{method}.per_site.{site}'"
        per_site.append(
            {
                "site": site,
                "n": values.get("n"),
                **{m: _metric(values.get(m), f"{where}.{m}") for m in _METRICS},
                "per_class_sensitivity": dict(values.get("per_class_sensitivity") or {}),
            }
        )
    calibration = metrics.get("calibration") or {}
    cal_site = calibration.get("per_site") or {}
    if calibration and calibration.get("method") not in (None, method):
        cal_site = {}
    comparison = {}
    margins = metrics.get("margins") or {}
    for name in ("pooled", "fedavg", "random_features", "output_average"):
        if name in margins:
            entry_m = _metric(margins[name], f"{source}: field 'margins.{name}'")
            family = family_of_method(name)
            if entry_m is not None:
                entry_m["description"] = family.describe(name) if family else name
            comparison[name] = entry_m
    overall = entry.get("overall") or {}
    return {
        "unseen_site": _unseen_site(facts, metrics.get("leave_one_site_out"), method, source),
        "report": str(report_dir),
        "method": method,
        "test_set": run_info.get("test_set"),
        "n_images": run_info.get("n_images"),
        "overlap_with_training": (run_info.get("overlap_with_training") or {}).get("images"),
        "bootstrap": settings.get("n_boot"),
        "ci_level": settings.get("ci_level"),
        "resampling": settings.get("resampling"),
        "per_site": per_site,
        "overall": {
            "n": overall.get("n"),
            **{m: _metric(overall.get(m), f"{source}: overall {m}") for m in _METRICS},
        },
        "mean_over_sites": dict(entry.get("mean_over_sites") or {}),
        "calibration": {
            "temperature": calibration.get("temperature"),
            "fitted_on": calibration.get("fitted_on"),
            "ece_after_scaling": {
                site: v.get("ece_after") for site, v in cal_site.items() if isinstance(v, Mapping)
            },
        },
        "margin_over": comparison,
        "margin_metric": settings.get("margin_metric"),
    }


def _unseen_site(facts: RunFacts, loso: Any, method: str, source: Path) -> dict[str, Any] | None:
    """The fusion at each site when that site's expert and rows were left out
    (leave-one-site-out), or why such figures would mislead; ``None`` without them."""
    if not isinstance(loso, Mapping) or not loso:
        return None
    if facts.cfg.expert.start == "fedavg" or facts.manifest.get("mode") == "federated":
        return {
            "per_site": [],
            "note": "the report's leave-one-site-out figures are not shown: every expert of "
            "this run started from a model trained on every site (expert.start: fedavg) or "
            "was trained in a federation, so no site was unseen",
        }
    rows = []
    for site, block in loso.items():
        fused = block.get(method) if isinstance(block, Mapping) else None
        if not isinstance(fused, Mapping):
            continue
        where = f"{source}: field 'leave_one_site_out.{site}.{method}'"
        rows.append(
            {
                "site": site,
                "n": fused.get("n"),
                "balanced_accuracy": _metric(fused.get("balanced_accuracy"), where),
                "macro_auc": _metric(fused.get("macro_auc"), where),
            }
        )
    return {"per_site": rows, "note": None}


def _read_metrics(report_dir: Path) -> dict[str, Any]:
    path = report_dir / "metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: no metrics.json; run `sitefusion evaluate` first") from err
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: unreadable evaluation report ({err})") from err
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data


def _software(facts: RunFacts) -> dict[str, Any]:
    envs = facts.manifest.get("environments") or []
    last = envs[-1] if envs and isinstance(envs[-1], Mapping) else {}
    return {
        "trained_with": {
            "python": last.get("python"),
            "platform": last.get("platform"),
            "packages": dict(last.get("packages") or {}),
            "environments_recorded": len(envs),
        },
        "card_written_with": {"sitefusion": package_version("sitefusion")},
    }


def build_model_card(
    run_dir: str | Path,
    report_dir: str | Path | None = None,
    *,
    limits: LimitThresholds | None = None,
    about: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The model card of the finished run in ``run_dir`` as a JSON-safe dict.

    ``report_dir``: an evaluation report of this run (``sitefusion evaluate --out``) whose
    ``metrics.json`` gives per-site performance and calibration; without it the card says that
    no evaluation was attached. No image, patient or group id is ever copied into the card.

    Raises:
        ArtifactError: the run or the report is missing, changed, unfinished, malformed, or the
            report belongs to another run.
    """
    facts = read_run_facts(run_dir)
    told = read_about(about, facts.classes) if about is not None else About()
    limits = limits or LimitThresholds()
    cfg = facts.cfg
    performance = None
    if report_dir is not None:
        performance = _performance(facts, Path(report_dir), _read_metrics(Path(report_dir)))
    description = {v.name: v.description for v in FUSION.variants}.get(facts.fusion_name)
    calibration = facts.fusion_record.get("calibration") or {}
    classes = facts.classes
    sites = [s.site for s in facts.sites]
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "generated_at": stamp,
        "model_details": {
            "name": cfg.name,
            "title": told.text.get("title"),
            "description": told.text.get("description"),
            "run_id": str(facts.manifest.get("run_id", "")),
            "completed_at": facts.manifest.get("completed_at"),
            "mode": str(facts.manifest.get("mode", "central")),
            "type": "image classifier: one CNN expert per site, fused by a trained head",
            "fusion": {
                "method": facts.fusion_name,
                "mode": cfg.fusion.modes[0],
                "description": description,
                "fine_tuned_epochs": cfg.fusion.finetune_epochs,
                "soup": cfg.fusion.finetune_soup,
                "temperature": calibration.get("temperature", 1.0),
                "temperature_fitted_on": calibration.get("fitted_on"),
            },
            "backbone": {
                "name": cfg.expert.backbone,
                "feature_dim": cfg.expert.out_channels,
                "start": cfg.expert.start,
                "initial_weights": _initial_weights(facts),
            },
            "experts": facts.experts,
            "input": {
                "channels": cfg.data.channels,
                "spatial_size": list(cfg.data.spatial_size),
                "resizing": "area interpolation when shrinking, bilinear otherwise",
            },
            "output": {
                "classes": classes,
                "class_names": {c: told.class_names.get(c, c) for c in classes},
                "probabilities": "softmax of the fusion's logits divided by the temperature",
                "expert_weights": "attention weight of each site's expert, summing to 1",
            },
        },
        "intended_use": _intended_use(told, classes, cfg.data.channels),
        "factors": {
            "groups": "acquisition site (hospital, device): every figure is reported per site",
            "sites": sites,
            "classes": classes,
        },
        "training_data": {
            "source": told.text.get("data_source"),
            "license": told.text.get("license"),
            "citation": told.text.get("citation"),
            "split_by": "patient/lesion group, per site (a group's images share one split)",
            "splits": {
                "train": "the site expert's training images",
                "val": "choice of the expert's epoch",
                "fusion": "the fusion head's training and its temperature",
                "test": "internal test split, read once by evaluation",
            },
            "sites": _training_data(facts),
        },
        "normalization": {
            "kind": cfg.normalization.kind,
            "params": dict(cfg.normalization.params),
            "per_site": [{"site": site, **entry} for site, entry in facts.normalizers.items()],
            "unseen_site_policy": cfg.normalization.unseen_policy,
            "unseen_site_rule": _policy_text(cfg.normalization.unseen_policy),
        },
        "metrics": performance,
        "ood": {
            "method": "Mahalanobis distance of the mean expert feature to the fusion split's "
            "(standardised, Ledoit-Wolf shrinkage covariance)",
            "threshold": f"the {cfg.scoring.ood_quantile:g} quantile of the fusion split's own "
            "distances",
            "quantile": cfg.scoring.ood_quantile,
            "intensity_checks": "also flagged: a constant image, one that normalization makes "
            "constant, or one mostly outside the intensity range its site normalizer was fitted on",
        },
        "limitations": _limitations(facts, limits),
        "thresholds": {
            "min_test_images": limits.min_test_images,
            "min_training_images": limits.min_training_images,
            "min_class_images": limits.min_class_images,
        },
        "ethical_considerations": [
            "no patient name, patient id or date of birth is written to scores, logs or this card",
            "performance differs between sites and classes; read the per-site table, not only "
            "the mean",
            "the training data's class mix is not a clinic's: probabilities reflect it",
        ],
        "caveats_and_recommendations": [
            "evaluate on a local sample before use at a new site",
            "treat every flagged (out-of-distribution) case as unscored",
            "metrics on the internal test split are from the same sites and period as training",
        ],
        "software": _software(facts),
    }
