"""Every dataset csst reads, and the one SOURCE grammar of every command.

| module | owns |
| --- | --- |
| `base` | `Dataset` (what every kind offers), the sample columns, `sanitise_key`, `declared_classes` |
| `shardset` | `ShardSet`: a csst shard set in a folder or object storage; `is_pseudo` |
| `folder` | `FolderDataset`, `FolderSpec`: images + masks in folders, as mmsegmentation reads them |
| `specs` | spec files (`read_spec`) |
| `presets` | public datasets in their official layouts (`PRESETS`, `preset`), tables in `tables` and `tables_paper` (CamVid, Mapillary Vistas) |
| `subsets` | `Subset`: the samples a list file names, or the rest (`SOURCE@LIST`, `SOURCE@~LIST`) |
| `sources` | `parse_source` (the SOURCE grammar), `as_dataset`, `KINDS`, `from_attrs` |

It may import `csst_data.store` and `csst_data.jpeg`; never the index, the
loader or torch.
"""

from csst_data.datasets import tables  # noqa: F401
from csst_data.datasets.base import CONTENT_PREFIX, Dataset, declared_classes, sanitise_key, source_name  # noqa: F401
from csst_data.datasets.folder import FolderDataset, FolderSpec  # noqa: F401
from csst_data.datasets.presets import PRESET_HELP, PRESETS, Preset, preset  # noqa: F401
from csst_data.datasets.shardset import ShardSet, is_pseudo  # noqa: F401
from csst_data.datasets.sources import (  # noqa: F401
    KINDS, FolderOptions, as_dataset, describe_grammar, from_attrs, parse_source)
from csst_data.datasets.specs import read_spec  # noqa: F401
from csst_data.datasets.subsets import Subset, subset  # noqa: F401
from csst_data.store.codecs import label_decoder  # noqa: F401  (it lived here; its home is the codecs)
