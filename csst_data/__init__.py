"""Storage and data for csst: codecs, shards, sources, components, index,
sampling, crops, schedules, loader and the synthetic dataset. No model code;
torch is imported only by `csst_data.loader`."""

IGNORE = 255
