"""JPEG structure below the decoder: what csst does with a JPEG's bytes.

Owns parsing (markers, frame, restart intervals, EXIF orientation), the
restart index csst writes into its JPEGs (APP9), splicing a window's restart
intervals into a small valid JPEG and decoding it (`window_decode`), and the
lossless restart-marker transcoder (`lossless`, numba kernels). It may import
numpy, numba, simplejpeg and Pillow; nothing else of csst.
"""

from csst_data.jpeg.structure import (  # noqa: F401  (the package's public API)
    JpegInfo, UnsupportedJpeg, can_splice, choose_restart_interval, dct_scale, exif_orientation,
    is_restart_index, parse, restart_intervals, restart_offsets, scaled_size, scan_markers, size_mismatch,
    splice, window_decode, with_restart_index, without_orientation, without_restart_index)
