"""Deterministic synthetic multi-site data sets (for the demo and the test fixtures).

The generator imitates the situation sitefusion is built for: several hospitals ("sites") image
the same kinds of findings, but each site has its own case mix and its own acquisition chain.
One module per part of that design:

- :mod:`~sitefusion.data.synthetic.shapes`: the shared content (lesion-like objects whose shape
  is the class, on a textured background; images of one group share their objects);
- :mod:`~sitefusion.data.synthetic.mix`: site names and each site's class mix;
- :mod:`~sitefusion.data.synthetic.acquisition`: each site's acquisition chain (gain, offset,
  gamma, bias field, colour cast, noise);
- :mod:`~sitefusion.data.synthetic.arrays`: the data set in memory, in its files' value scale;
- :mod:`~sitefusion.data.synthetic.files`: the data set written as PNG / NIfTI files plus a
  manifest;
- :mod:`~sitefusion.data.synthetic.checks`: the checks of the generator's arguments.

Determinism: everything is drawn from ``numpy.random.default_rng([seed, stream, ...])``
generators, one stream per purpose and site (1: acquisitions, 2: class order, 3: content); no
global state. The same arguments give identical arrays and byte-identical files.
"""

from sitefusion.data.synthetic.acquisition import SiteAcquisition, site_acquisitions
from sitefusion.data.synthetic.arrays import (
    NIFTI_SCALE,
    PNG8_MAX,
    PNG16_MAX,
    SyntheticArrays,
    make_synthetic_arrays,
)
from sitefusion.data.synthetic.files import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    generate_from_config,
    generate_synthetic_dataset,
)
from sitefusion.data.synthetic.mix import (
    default_site_names,
    site_class_mix,
    synthetic_class_names,
)
from sitefusion.data.synthetic.shapes import SHAPE_KINDS

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "NIFTI_SCALE",
    "PNG8_MAX",
    "PNG16_MAX",
    "SHAPE_KINDS",
    "SiteAcquisition",
    "SyntheticArrays",
    "default_site_names",
    "generate_from_config",
    "generate_synthetic_dataset",
    "make_synthetic_arrays",
    "site_acquisitions",
    "site_class_mix",
    "synthetic_class_names",
]
