"""The shard store: how csst keeps samples on disk and in object storage.

Owns the sample codecs (`codecs`: labels as .npy.zst / PNG, soft labels, image
decoding), the webdataset shard format (`shards`: writer, reader, manifest,
verify), object-store access (`storage`: the one module that talks to s3/gs/az/
http), writing a shard set to a URL through a local staging folder (`mirror`)
and output locks (`locks`). It may import numpy, webdataset, numcodecs, Pillow,
simplejpeg, obstore and `csst_data` itself (IGNORE); nothing else of csst.
"""
