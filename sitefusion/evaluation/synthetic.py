"""Simulated predictions of every method, for demos, report previews and tests.

Nothing here is learned: each method's logits are the true class's indicator scaled by a per-method
"skill", plus image noise and a per-group offset (so images of one patient err together). Local
experts are skilled on their own site only, ``random_features`` is near chance, and the fusion
heads are over-confident, so temperature scaling has something to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sitefusion.evaluation.predictions import FUSION_METHODS, PredictionSet, local_method

__all__ = ["DEFAULT_SKILL", "simulate_predictions"]

#: Skill (logit separation) of each method; local experts use ``local_skill``.
DEFAULT_SKILL: dict[str, float] = {
    "fusion": 1.7,
    "fusion_concat": 1.5,
    "fusion_attention": 1.6,
    "pooled": 1.3,
    "output_average": 1.3,
    "weight_average": 1.0,
    "stacking": 1.45,
    "random_features": 0.15,
}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def simulate_predictions(
    rng: np.random.Generator,
    sites: Sequence[str] = ("A", "B", "C"),
    classes: Sequence[str] = ("benign", "malignant", "other"),
    images_per_site: int | Sequence[int] = 120,
    images_per_group: int = 3,
    methods: Sequence[str] | None = None,
    local_skill: tuple[float, float] = (2.0, 0.6),
    overconfidence: float = 2.5,
) -> PredictionSet:
    """Return a :class:`PredictionSet` of simulated predictions.

    Args:
        rng: the random generator (the result depends only on it and the arguments).
        sites: site names; each site also has a local expert ``local:<site>``.
        classes: class names; each site gets its own class prevalence.
        images_per_site: test images of each site (one number, or one per site).
        images_per_group: consecutive images of a site share a group (patient).
        methods: method names to simulate (default: every fusion head and baseline and every
            local expert).
        local_skill: skill of a local expert on its own site and on the other sites.
        overconfidence: factor multiplying the fusion heads' logits (> 1: over-confident).
    """
    sites = tuple(sites)
    classes = tuple(classes)
    counts = (
        [int(images_per_site)] * len(sites)
        if isinstance(images_per_site, int)
        else [int(n) for n in images_per_site]
    )
    if methods is None:
        methods = [*DEFAULT_SKILL, *(local_method(s) for s in sites)]
    n_classes = len(classes)
    site_col, group_col, labels = [], [], []
    for s, n in zip(sites, counts, strict=True):
        prevalence = rng.dirichlet(np.full(n_classes, 4.0))
        site_col += [s] * n
        group_col += [f"{s}-p{i // images_per_group:04d}" for i in range(n)]
        labels.append(rng.choice(n_classes, size=n, p=prevalence))
    y = np.concatenate(labels)
    site = np.array(site_col)
    group = np.array(group_col)
    n_total = y.shape[0]
    _, group_code = np.unique(group, return_inverse=True)
    onehot = np.eye(n_classes)[y]
    probs: dict[str, np.ndarray] = {}
    attention: dict[str, np.ndarray] = {}
    for method in methods:
        if method.startswith("local:"):
            own = site == method.split(":", 1)[1]
            skill = np.where(own, local_skill[0], local_skill[1])[:, None]
        else:
            skill = np.full((n_total, 1), DEFAULT_SKILL[method])
        group_offset = rng.normal(0.0, 0.8, size=(int(group_code.max()) + 1, n_classes))
        logits = 1.5 * skill * onehot + group_offset[group_code] + rng.normal(size=onehot.shape)
        if method in FUSION_METHODS:
            logits = logits * overconfidence
            own_expert = (site[:, None] == np.array(sites)[None, :]).astype(np.float64)
            attention[method] = _softmax(1.5 * own_expert + 0.5 * rng.normal(size=own_expert.shape))
        probs[method] = _softmax(logits)
    return PredictionSet(
        classes=classes,
        sites=sites,
        experts=sites,
        ids=np.array([f"img{i:05d}" for i in range(n_total)]),
        labels=y,
        site=site,
        group=group,
        probs=probs,
        attention=attention,
    )
