"""The centroid index: connected components of every class in every label.

Owns the component kernel (`components`, numba), the parallel build over
datasets and its parts for multi-rank builds (`build`), and the zarr store an
index lives in (`CentroidIndex`). It may import `csst_data.store`,
`csst_data.datasets` and `csst_data.workers`; never the loader or torch.
"""

from csst_data.index.build import (  # noqa: F401  (the package's public API)
    CentroidIndex, StaleIndexError, build_index, merge_indexes, part_path)
