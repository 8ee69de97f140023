"""JPEG structure below the decoder: what csst does with a JPEG's bytes.

Owns parsing (`structure`: markers, frame, restart interval, EXIF
orientation), the restart index csst writes into its JPEGs (`restart`, APP9),
splicing a window's restart intervals into a small valid JPEG and decoding it
(`window`), and the lossless restart-marker transcoder (`lossless`, driving
the numba kernels of `lossless_kernels`). It may import numpy, numba,
simplejpeg and Pillow; nothing else of csst.
"""

from csst_data.jpeg.restart import (  # noqa: F401  (the package's public API)
    is_restart_index, restart_intervals, with_restart_index, without_restart_index)
from csst_data.jpeg.structure import (  # noqa: F401
    JpegInfo, UnsupportedJpeg, can_splice, choose_restart_interval, exif_orientation, parse, restart_offsets,
    scan_markers, size_mismatch, without_orientation)
from csst_data.jpeg.window import band_decode, dct_scale, scaled_size, splice, window_decode  # noqa: F401
