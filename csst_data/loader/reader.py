"""Random access to the samples of an index: `SampleReader`, the loader's one way to read bytes.

Rows of local sources are read with positioned reads through one `RangeReader`;
rows of object-store sources come whole (image and label in one ranged GET)
and can be fetched ahead in plan order (`prefetch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Tuple

import numpy as np

from csst_data.store.codecs import label_decoder
from csst_data.store.shards import RangeReader

if TYPE_CHECKING:
    from csst_data.index import CentroidIndex


class SampleReader:
    """Random access to the images and labels of an index's images table.

    Picklable: file descriptors are opened lazily in each process (DataLoader
    workers), through one `RangeReader`.

    >>> reader = SampleReader(CentroidIndex.open("index.zarr"))
    >>> reader.image_bytes(row), reader.label(row)
    """

    def __init__(self, index: CentroidIndex) -> None:
        images = index.images
        self.datasets = list(index.datasets)
        self.key = images["key"]
        self.source = np.asarray(images["source"])
        self.shard = np.asarray(images["shard"])
        self.columns = {c: np.asarray(images[c]) for c in ("label_offset", "label_size", "image_offset", "image_size")}
        self.paths = {"label": images.get("label_path"), "image": images.get("image_path")}
        self.reader = RangeReader()
        self._decode = None  # label_decoder(), made in each process
        # Rows of object-store sources are read whole (image and label in one request) and held
        # until the next row is asked for; `prefetch` fetches them ahead, in plan order.
        self.remote = np.array([getattr(ds, "remote", False) for ds in self.datasets], dtype=bool)
        self._held, self._ahead = None, None

    def __getstate__(self):
        return {**self.__dict__, "_decode": None, "_held": None, "_ahead": None}

    def __len__(self) -> int:
        return len(self.key)

    def prefetch(self, rows: Iterable[int], depth: int = 32, threads: int = 8, max_bytes: int = 256 << 20) -> None:
        """Fetch the rows of object-store sources among `rows` ahead of their use, in this order
        (prefetch.Prefetcher); rows of local sources are read when asked for, as before."""
        from csst_data.loader.prefetch import Prefetcher

        self.stop_prefetch()
        rows = [int(r) for r in rows if self.remote[self.source[int(r)]]]
        # A row drawn twice in a row is served the second time from the held copy (`_read`).
        rows = [r for i, r in enumerate(rows) if i == 0 or r != rows[i - 1]]
        if rows:
            sizes = self.columns["image_size"] + self.columns["label_size"]
            self._ahead = Prefetcher(self._fetch_row, ((r, int(sizes[r])) for r in rows), depth, threads, max_bytes)

    def stop_prefetch(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def _fetch_row(self, row):
        """{"image", "label"} bytes of a remote row, in one request (a tar header apart)."""
        ds = self.datasets[self.source[row]]
        parts = [w for w in ("image", "label") if self.columns[f"{w}_offset"][row] >= 0]
        data = ds.read_ranges(self.reader, self.shard[row], [(int(self.columns[f"{w}_offset"][row]),
                                                              int(self.columns[f"{w}_size"][row])) for w in parts])
        return dict(zip(parts, data))

    def _read(self, row, what):
        ds = self.datasets[self.source[row]]
        if self.remote[self.source[row]]:
            if self._held is None or self._held[0] != row:
                got = self._ahead.take(row) if self._ahead is not None else None
                self._held = (row, got if got is not None else self._fetch_row(row))
            if what not in self._held[1]:
                raise ValueError(f"sample {self.key[row]!r} of {ds.name} has no {what}")
            return self._held[1][what]
        offset, size = int(self.columns[f"{what}_offset"][row]), int(self.columns[f"{what}_size"][row])
        path = self.paths[what][row] if self.paths[what] is not None else ""
        if offset < 0 and not path:
            raise ValueError(f"sample {self.key[row]!r} of {ds.name} has no {what}")
        return ds.read(self.reader, self.shard[row], offset, size, path)

    def where(self, row: int, what: str = "image") -> str:
        """The file, or shard member and byte offset, of row `row`'s image or label, for messages."""
        row = int(row)
        path = self.paths[what][row] if self.paths[what] is not None else ""
        return self.datasets[self.source[row]].locate(what, self.key[row], self.shard[row],
                                                      self.columns[f"{what}_offset"][row], path)

    def image_bytes(self, row: int) -> bytes:
        """The original image bytes (JPEG or PNG) of index row `row`."""
        return self._read(int(row), "image")

    def label_bytes(self, row: int) -> bytes:
        """The stored label bytes of index row `row`, undecoded (`label` decodes them)."""
        return self._read(int(row), "label")

    def topk(self, row: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(class ids, probabilities x 255), uint8 K x H x W each, of row `row`'s soft label, or None."""
        from csst_data.store.codecs import decode_npy_zst

        row = int(row)
        data = self.datasets[self.source[row]].topk(self.reader, self.shard[row], self.key[row])
        return None if data is None else (decode_npy_zst(data[0]), decode_npy_zst(data[1]))

    def confidence(self, row: int) -> Optional[np.ndarray]:
        """The teacher's confidence of row `row`'s pseudo label (uint8 H x W, round(p * 255)), or None."""
        from csst_data.store.codecs import decode_npy_zst

        row = int(row)
        data = self.datasets[self.source[row]].confidence(self.reader, self.shard[row], self.key[row])
        return None if data is None else decode_npy_zst(data)

    def label(self, row: int) -> np.ndarray:
        """The label of index row `row`: uint8 H x W in class ids, 255 = ignore."""
        row = int(row)
        if self._decode is None:
            self._decode = label_decoder()
        # A .npy.zst label comes back as a read-only view of one reused buffer, valid until the next call.
        return self.datasets[self.source[row]].decode_label(self._read(row, "label"), self.key[row], self._decode)

    def close(self) -> None:
        self.stop_prefetch()
        self.reader.close()
