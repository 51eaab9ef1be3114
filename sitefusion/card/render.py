"""Render a model card (the dict of :func:`~sitefusion.card.build.build_model_card`) as Markdown.

Written for the clinician who decides whether to use the model: what it does and for whom,
how well it did at each site (with 95% intervals), when not to trust it, then the technical
record. It renders only what the card holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_model_card"]

_MODES = {
    "average_attention": "the experts' average alongside an attention-weighted sum",
    "attention": "an attention-weighted sum of the experts",
    "concat": "all experts' features side by side",
}

_NAMES = {
    "balanced_accuracy": "Balanced accuracy",
    "macro_auc": "Macro AUC",
    "ece": "ECE",
    "brier": "Brier",
}


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _share(fraction: float) -> str:
    """A class's share of a site's images; a class that is present never reads 0%."""
    return "<1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"


def _with_ci(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    ci = entry.get("ci95")
    if ci and None not in ci:
        return f"{entry['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{entry['value']:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _sensitivity(metrics: Mapping[str, Any], class_names: Mapping[str, str]) -> list[str]:
    """Sensitivity (recall) of each class at each site: the share of that class's test images
    the model named correctly; "none" where the site's test split has no such image."""
    per_site = metrics.get("per_site") or []
    if not per_site or not any(e.get("per_class_sensitivity") for e in per_site):
        return []
    rows = [
        [_named(cls, class_names)]
        + [
            "none"
            if e["per_class_sensitivity"].get(cls) is None
            else f"{e['per_class_sensitivity'][cls]:.2f}"
            for e in per_site
        ]
        for cls in class_names
    ]
    return [
        "",
        "Sensitivity per class (share of each class's test images named correctly; no "
        'interval; "none": the site\'s test split holds no image of the class):',
        "",
        *_table(["Class", *[e["site"] for e in per_site]], rows),
    ]


def _unseen(unseen: Mapping[str, Any] | None) -> list[str]:
    """The fusion at a site it never saw (leave-one-site-out), or why it is not shown."""
    if not unseen:
        return []
    if unseen.get("note"):
        return ["", f"At a site it has never seen: {unseen['note']}."]
    rows = [
        [
            e["site"],
            _num(e.get("n")),
            _with_ci(e.get("balanced_accuracy")),
            _with_ci(e.get("macro_auc")),
        ]
        for e in unseen.get("per_site") or []
    ]
    if not rows:
        return []
    return [
        "",
        "At a site it has never seen (leave-one-site-out: each site's expert and images left out "
        "of training, its test images scored by the rest; the closest estimate here of a new "
        "hospital):",
        "",
        *_table(["Held-out site", "Test images", "Balanced accuracy", "Macro AUC"], rows),
    ]


def _named(cls: str, class_names: Mapping[str, str]) -> str:
    name = class_names.get(cls, cls)
    return cls if name == cls else f"{cls} ({name})"


def _performance(metrics: Mapping[str, Any] | None, class_names: Mapping[str, str]) -> list[str]:
    if not metrics:
        return [
            "No evaluation report was attached to this card (`sitefusion card RUN --report "
            "REPORT_DIR`): its performance is **not stated here**. Do not use the model until "
            "it has been evaluated.",
        ]
    level = metrics.get("ci_level") or 0.95
    lines = [
        f"Measured on the {metrics.get('test_set') or 'test set'} ({metrics.get('n_images')} "
        f"images; report `{metrics.get('report')}`), method `{metrics.get('method')}`. Brackets: "
        f"{level:.0%} confidence intervals from {metrics.get('bootstrap')} bootstrap resamples "
        "of patients/lesions within each site. Balanced accuracy is the mean sensitivity over "
        "the classes present at a site (chance is 1 / number of classes); AUC 0.5 is chance. "
        "ECE (expected calibration error) and Brier score: lower is better.",
        "",
    ]
    after = (metrics.get("calibration") or {}).get("ece_after_scaling") or {}
    header = ["Site", "Test images", "Balanced accuracy", "Macro AUC", "ECE", "Brier"]
    if after:
        header.append("ECE of scored probabilities")
    rows = []
    for entry in metrics.get("per_site") or []:
        row = [
            entry["site"],
            _num(entry.get("n")),
            _with_ci(entry.get("balanced_accuracy")),
            _with_ci(entry.get("macro_auc")),
            _with_ci(entry.get("ece")),
            _with_ci(entry.get("brier")),
        ]
        if after:
            row.append(_num(after.get(entry["site"])))
        rows.append(row)
    overall = metrics.get("overall") or {}
    row = [
        "**all sites**",
        _num(overall.get("n")),
        _with_ci(overall.get("balanced_accuracy")),
        _with_ci(overall.get("macro_auc")),
        _with_ci(overall.get("ece")),
        _with_ci(overall.get("brier")),
    ]
    if after:
        row.append(_num(after.get("overall")))
    rows.append(row)
    lines += _table(header, rows)
    lines += _sensitivity(metrics, class_names)
    mean = metrics.get("mean_over_sites") or {}
    if mean.get("balanced_accuracy") is not None:
        lines += ["", f"Mean balanced accuracy over sites: {mean['balanced_accuracy']:.3f}."]
    cal = metrics.get("calibration") or {}
    if cal.get("temperature") is not None:
        lines += [
            "",
            f"The table's ECE and Brier are of the unscaled probabilities; scoring divides the "
            f"logits by the temperature {cal['temperature']:.3f} (fitted on "
            f"{cal.get('fitted_on')}), whose ECE is the last column.",
        ]
    margins = metrics.get("margin_over") or {}
    if margins:
        what = _NAMES.get(str(metrics.get("margin_metric")), str(metrics.get("margin_metric")))
        rows = [
            [f"{entry.get('description', name)} (`{name}`)", _with_ci(entry)]
            for name, entry in margins.items()
            if entry
        ]
        lines += [
            "",
            f"Compared with other ways of training ({what.lower()}, mean over sites; positive: "
            "the fusion is better; an interval that contains 0: no measured difference):",
            "",
            *_table(["Alternative", "Fusion minus alternative"], rows),
        ]
    lines += _unseen(metrics.get("unseen_site"))
    if metrics.get("overlap_with_training"):
        lines += [
            "",
            f"**Warning:** {metrics['overlap_with_training']} evaluated images (or their "
            "patients/lesions) were seen in training: these figures are optimistic.",
        ]
    return lines


def _training(card: Mapping[str, Any]) -> list[str]:
    data = card["training_data"]
    classes = card["model_details"]["output"]["classes"]
    rows = []
    for s in data["sites"]:
        im = s["images"]
        mix = ", ".join(
            f"{c} {_share(s['class_mix'][c])}" for c in classes if s["class_counts"].get(c)
        )
        rows.append(
            [
                s["site"] + ("" if s["has_expert"] else " (no expert)"),
                str(im["train"]),
                str(im["val"]),
                str(im["fusion"]),
                str(im["test"]),
                str(s["groups"]),
                mix,
            ]
        )
    told = [
        f"{label}: {data[key]}"
        for key, label in (("source", "Source"), ("license", "Licence"), ("citation", "Cite"))
        if data.get(key)
    ]
    return [
        *[line for t in told for line in (t, "")],
        f"Split by {data['split_by']}.",
        "",
        *_table(
            ["Site", "Train", "Validation", "Fusion", "Test", "Patients/lesions", "Class mix"],
            rows,
        ),
    ]


def _experts_sentence(backbone: Mapping[str, Any]) -> str:
    if backbone["start"] == "fedavg":
        return (
            f"Each expert is a `{backbone['name']}` network fine-tuned on one site's images, "
            "starting from a shared model that federated averaging trained on every site's "
            "training images (no image left its site)"
        )
    return f"Each expert is a `{backbone['name']}` network trained on one site's images only"


def _glance(card: Mapping[str, Any]) -> list[str]:
    """Three lines for the reader who reads nothing else."""
    metrics = card["metrics"]
    lines = ["## At a glance", ""]
    if not metrics:
        return [*lines, "- **Not evaluated**: no performance is stated in this card.", ""]
    overall = (metrics.get("overall") or {}).get("balanced_accuracy")
    sites = [e for e in metrics.get("per_site") or [] if e.get("balanced_accuracy")]
    if overall:
        lines.append(
            f"- Balanced accuracy over all {metrics.get('n_images')} test images: "
            f"{_with_ci(overall)} (chance: {1 / len(card['factors']['classes']):.2f})."
        )
    if sites:
        lo = min(sites, key=lambda e: e["balanced_accuracy"]["value"])
        hi = max(sites, key=lambda e: e["balanced_accuracy"]["value"])
        lines.append(
            f"- It differs between sites: from {lo['balanced_accuracy']['value']:.2f} at "
            f"{lo['site']} ({lo['n']} test images) to {hi['balanced_accuracy']['value']:.2f} at "
            f"{hi['site']} ({hi['n']} test images)."
        )
    pooled = (metrics.get("margin_over") or {}).get("pooled")
    if pooled and pooled.get("ci95") and None not in pooled["ci95"]:
        low, high = pooled["ci95"]
        verdict = (
            "better than"
            if low > 0
            else "worse than"
            if high < 0
            else "not measurably different from"
        )
        lines.append(
            f"- It is {verdict} one model trained on all sites' images pooled ({_with_ci(pooled)})."
        )
    n_lim = len(card["limitations"])
    lines.append(f"- {n_lim} known limitation{'s' if n_lim != 1 else ''} below; read them first.")
    return [*lines, ""]


def render_model_card(card: Mapping[str, Any]) -> str:
    """Markdown text of ``card`` (a :func:`~sitefusion.card.build.build_model_card` result)."""
    d = card["model_details"]
    use = card["intended_use"]
    backbone = d["backbone"]
    weights = backbone["initial_weights"]
    norm = card["normalization"]
    ood = card["ood"]
    sites = ", ".join(card["factors"]["sites"])
    names = d["output"].get("class_names") or {c: c for c in d["output"]["classes"]}
    classes = ", ".join(_named(c, names) for c in d["output"]["classes"])
    lines = [
        f"# Model card: {d.get('title') or d['name']} (run {d['run_id']})",
        "",
        f"Generated {card['generated_at']} by `sitefusion card` from the run directory"
        + (" and its evaluation report" if card["metrics"] else "")
        + f". Run finished {d.get('completed_at') or 'at an unrecorded time'}.",
        "",
        *_glance(card),
        "## What it does",
        "",
        *([d["description"], ""] if d.get("description") else []),
        f"Given one image ({d['input']['channels']} channel(s), resized to "
        f"{' x '.join(map(str, d['input']['spatial_size']))}), it gives a probability for each "
        f"of {len(d['output']['classes'])} classes ({classes}) and "
        f"says how much it relied on each of the {len(d['experts'])} site experts ({sites}). "
        + _experts_sentence(backbone)
        + "; a "
        f"fusion head ({_MODES.get(d['fusion']['mode'], d['fusion']['mode'])}) combines them. "
        "Every image is first normalized with its own site's intensity parameters.",
        "",
        "## Intended use",
        "",
        *[f"- {u}" for u in use["primary_uses"]],
        "",
        "Intended users:",
        "",
        *[f"- {u}" for u in use["primary_users"]],
        "",
        "**Not for:**",
        "",
        *[f"- {u}" for u in use["out_of_scope"]],
        "",
        "## How well it works, per site",
        "",
        *_performance(card["metrics"], names),
        "",
        "## Known limitations (computed from the data)",
        "",
    ]
    limitations = card["limitations"]
    lines += [f"- {item['text']}" for item in limitations] or ["- none found by the checks"]
    t = card["thresholds"]
    lines += [
        "",
        f"Checked: sites with fewer than {t['min_test_images']} test images or "
        f"{t['min_training_images']} training images, classes with no or fewer than "
        f"{t['min_class_images']} training images at a site, classes absent from a site's "
        "test split.",
        "",
        "## When a result should not be trusted (out-of-distribution flag)",
        "",
        f"Each scored image gets an `ood_flag`: {ood['method']}, above {ood['threshold']}; "
        f"{ood['intensity_checks']}. A flagged image is unlike the data the fusion learned "
        "from; its probabilities should not be read.",
        "",
        "## Images from a new site",
        "",
        f"Policy `{norm['unseen_site_policy']}`: {norm['unseen_site_rule']}. Each score says "
        "which site's parameters were used (`norm_site`) and why (`norm_policy`).",
        "",
        "## Training data",
        "",
        *_training(card),
        "",
        "## Ethical considerations",
        "",
        *[f"- {x}" for x in card["ethical_considerations"]],
        "",
        "## Caveats and recommendations",
        "",
        *[f"- {x}" for x in card["caveats_and_recommendations"]],
        "",
        "## Technical record",
        "",
        f"- Backbone `{backbone['name']}`, feature size {backbone['feature_dim']}, experts "
        f"start from `{backbone['start']}`.",
        f"- Initial weights: {weights['source']}"
        + (f", SHA-256 `{weights['sha256']}`" if weights.get("sha256") else "")
        + f"; as stored in the run (`{weights['run_file']}`) SHA-256 "
        f"`{weights['run_file_sha256']}`.",
        f"- Fusion `{d['fusion']['method']}` (mode `{d['fusion']['mode']}`), "
        + (
            f"fine-tuned end to end with its own expert copies for "
            f"{d['fusion']['fine_tuned_epochs']} epochs (soup of {d['fusion']['soup']})"
            if d["fusion"]["fine_tuned_epochs"]
            else "a head over the frozen site experts"
        )
        + f"; temperature {_num(d['fusion']['temperature'])}.",
        f"- Site normalizers (`{norm['kind']}`):",
    ]
    lines += [
        f"  - {n['site']}: `{n['file']}` (version {n['version']}, fitted on "
        f"{n['fitted_on_images']} images) SHA-256 `{n['sha256'][:16]}…`"
        for n in norm["per_site"]
    ]
    sw = card["software"]["trained_with"]
    packages = ", ".join(f"{k} {v}" for k, v in sorted(sw["packages"].items()))
    lines += [
        f"- Trained with Python {sw['python']} on {sw['platform']}: {packages}.",
        f"- Card written with sitefusion {card['software']['card_written_with']['sitefusion']}.",
        "",
    ]
    return "\n".join(lines)
