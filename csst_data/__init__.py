"""Storage and data for csst, one package per job: the shard store (`store`),
JPEG structure (`jpeg`), datasets and the SOURCE grammar (`datasets`), the
centroid index (`index`), the class-balanced crop loader (`loader`) and sharded
runs (`runs`). No model code; torch is imported only by `csst_data.loader`."""

IGNORE = 255
