"""Every dataset csst reads, and the one SOURCE grammar of every command.

Owns the dataset classes (a csst shard set, images + masks in folders as
mmsegmentation reads them), spec files, the presets for public datasets in
their official layouts with their label tables (`tables`), and
`parse_source`. It may import `csst_data.store` and `csst_data.jpeg`; never
the index, the loader or torch.
"""

from csst_data.datasets import tables  # noqa: F401
from csst_data.datasets.core import (  # noqa: F401  (the package's public API)
    KINDS, PRESETS, Dataset, FolderDataset, FolderOptions, FolderSpec, ShardSet, as_dataset,
    declared_classes, describe_grammar, from_attrs, is_pseudo, label_decoder, parse_source, preset, read_spec,
    sanitise_key, source_name)
