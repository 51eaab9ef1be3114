"""Site priors for the fusion's decisions: what each hospital's case mix adds to the logits.

The fusion is trained with class weights balanced over all sites pooled, and it sees images
normalized per site, so its logits carry little of any one site's case mix: it answers as if
every site had the same balanced prevalence. For an image of a known site the fused logits can
be shifted towards that site's own prevalence,

    ``logits' = logits + strength * (log p_site(c) - log p_all(c))``  ``[N, K]``,

where ``p_site`` and ``p_all`` are the class frequencies of the fusion's training rows of that
site and of all sites, each floored at ``floor`` and renormalised (the floor keeps a class a site
has barely seen from getting an extreme offset). ``strength = 0`` leaves the logits unchanged,
``1`` is the full Bayes prior shift. Images of a site without an expert get no shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sitefusion.errors import ConfigError

__all__ = ["apply_site_prior", "floored_frequencies", "site_prior_offsets"]


def floored_frequencies(counts: np.ndarray, floor: float) -> np.ndarray:
    """Class frequencies of ``counts [K]``, each floored at ``floor`` and renormalised."""
    p = counts / counts.sum() if counts.sum() > 0 else np.full(len(counts), 1.0 / len(counts))
    p = np.maximum(p, floor)
    return p / p.sum()


def site_prior_offsets(
    labels: np.ndarray,
    sites: Sequence[str] | np.ndarray,
    site_names: Sequence[str],
    num_classes: int,
    *,
    strength: float,
    floor: float,
) -> np.ndarray:
    """``[E, K]`` logit offsets, one row per site of ``site_names`` (the expert order).

    ``labels [N]`` (class indices) and ``sites [N]`` are the fusion's training rows. A site with
    no rows gets a zero row.
    """
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"site prior strength must be in [0, 1], got {strength}")
    if not 0.0 < floor < 1.0 / num_classes:
        raise ConfigError(
            f"site prior floor must be in (0, 1/{num_classes}) for {num_classes} classes, "
            f"got {floor}"
        )
    labels = np.asarray(labels, dtype=np.int64)
    sites = np.asarray(sites)
    if len(labels) != len(sites):
        raise ValueError(f"{len(labels)} labels but {len(sites)} site entries")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be class indices in [0, {num_classes})")
    pooled = np.log(
        floored_frequencies(np.bincount(labels, minlength=num_classes).astype(float), floor)
    )
    out = np.zeros((len(site_names), num_classes))
    for e, name in enumerate(site_names):
        counts = np.bincount(labels[sites == name], minlength=num_classes).astype(float)
        if counts.sum() > 0:
            out[e] = strength * (np.log(floored_frequencies(counts, floor)) - pooled)
    return out


def apply_site_prior(logits: np.ndarray, home: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``logits [N, K]`` shifted by the offsets ``[E, K]`` of each row's home site.

    ``home [N, E]`` flags each image's own site's expert; a row with no flag (an unseen site)
    is returned unchanged.
    """
    home = np.asarray(home, dtype=bool)
    if home.shape != (logits.shape[0], offsets.shape[0]):
        raise ValueError(
            f"home mask {home.shape} does not match logits {logits.shape} and offsets "
            f"{offsets.shape}"
        )
    if (home.sum(1) > 1).any():
        raise ValueError("an image can have at most one home site")
    return (logits + home.astype(offsets.dtype) @ offsets).astype(logits.dtype)
