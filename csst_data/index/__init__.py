"""The centroid index: connected components of every class in every label.

Owns the component kernel (`components`, numba), the parallel build over
datasets and its parts for multi-rank builds (`build`: `build_index` with its
`IndexOptions`, `merge_indexes`), and the zarr store an index lives in
(`store`: `CentroidIndex`). It may import `csst_data.store`,
`csst_data.datasets` and `csst_data.workers`; never the loader or torch.
"""

from csst_data.index.build import IndexOptions, build_index, merge_indexes, part_path  # noqa: F401
from csst_data.index.store import CentroidIndex, StaleIndexError  # noqa: F401  (the package's public API)
