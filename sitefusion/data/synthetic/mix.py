"""Site names and each site's class mix.

Like real hospitals, sites see different case mixes. With ``S`` sites and ``K`` classes, site
``s < S - 1`` is skewed towards class ``s mod K``: its mix is
``(1 - skew) * uniform + skew * onehot(s mod K)`` (``skew = 0.5`` and ``K = 3`` give 2/3 of the
dominant class, 1/6 of each other class); the last site is balanced. Group counts are allocated
exactly (largest remainder, not sampled) and every class gets at least one group per site when
there are at least ``K`` groups, then the group order is shuffled.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sitefusion.data.synthetic.checks import check_int
from sitefusion.errors import ConfigError

__all__ = [
    "DEFAULT_CLASS_SKEW",
    "default_site_names",
    "group_labels",
    "site_class_mix",
    "synthetic_class_names",
]

DEFAULT_CLASS_SKEW = 0.5
"""How strongly each site but the last favours its own class, by default."""


def default_site_names(n_sites: int) -> list[str]:
    """``["site_a", "site_b", ..., "site_z", "site_aa", ...]`` for ``n_sites`` sites."""
    names = []
    for i in range(n_sites):
        letters = ""
        j = i + 1
        while j > 0:  # bijective base 26: a..z, aa..zz, ...
            j, r = divmod(j - 1, 26)
            letters = chr(ord("a") + r) + letters
        names.append(f"site_{letters}")
    return names


def synthetic_class_names(classes: int) -> list[str]:
    """``["class_0", ..., "class_{classes-1}"]``."""
    return [f"class_{k}" for k in range(classes)]


def site_class_mix(
    n_sites: int, classes: int, *, skew: float = DEFAULT_CLASS_SKEW
) -> npt.NDArray[np.float64]:
    """Expected class proportions of each site, shape ``[n_sites, classes]`` (rows sum to 1).

    Site ``s < n_sites - 1`` gets ``(1 - skew) * uniform + skew * onehot(s mod classes)``; the
    last site (and a single site) is balanced. ``skew = 0`` makes every site balanced.
    """
    check_int("sites", n_sites, 1)
    check_int("classes", classes, 2)
    if not 0.0 <= skew < 1.0:
        raise ConfigError(f"synthetic data: class_skew is {skew!r}; expected a number in [0, 1)")
    mix = np.full((n_sites, classes), 1.0 / classes)
    for s in range(n_sites - 1):
        mix[s] = (1.0 - skew) / classes
        mix[s, s % classes] += skew
    return mix


def group_labels(
    mix: npt.NDArray[np.float64], n_groups: int, rng: np.random.Generator
) -> list[int]:
    """Exact allocation of ``n_groups`` to classes (largest remainder), shuffled."""
    k = mix.size
    raw = mix * n_groups
    counts = np.floor(raw).astype(int)
    for idx in np.argsort(-(raw - counts), kind="stable")[: n_groups - int(counts.sum())]:
        counts[idx] += 1
    if n_groups >= k:  # every class present at every site, taken from the largest classes
        for idx in range(k):
            while counts[idx] < 1:
                counts[int(np.argmax(counts))] -= 1
                counts[idx] += 1
    labels = np.repeat(np.arange(k), counts)
    rng.shuffle(labels)
    return [int(v) for v in labels]
