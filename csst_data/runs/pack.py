"""`csst pack`: any dataset csst reads -> a csst shard set ready for fast training.

Per sample: the label becomes `.label.npy.zst` (class ids, 255 = ignore); a
JPEG image is transcoded losslessly to a restart-marker JPEG (same DCT
coefficients, so the same pixels; jpegtran.py), which the loader decodes by
window (jpeg.py); a PNG image is encoded as a restart-marker JPEG at `quality`,
or kept as it is with `lossless`; a JPEG that cannot be transcoded
(progressive, arithmetic coded) is kept as it is. A `.json` member records
where the sample came from and what was done to its image.

Workers decode and encode; this process writes shards in input order. Ranks,
resuming after a kill and failures work as in every shard-writing run
(shardrun.py): a rerun skips the keys already stored, and unreadable samples
go to failed.jsonl while the rest are packed.
"""

import hashlib
import io
import json
import os
import signal
import time
from dataclasses import asdict, dataclass

from csst_data import IGNORE
from csst_data.store.codecs import encode_json, encode_label, is_jpeg, is_png
from csst_data.jpeg.structure import exif_orientation
from csst_data.datasets import as_dataset, declared_classes
from csst_data.store.locks import OutputLock
from csst_data.workers import die_with_parent, mp_context
from csst_data.store.mirror import close_output, open_output
from csst_data.runs.shardrun import (check_resumable, finish_rank, rank_manifest_name, rank_of, rank_prefix,
                                record_failure, start_rank)
from csst_data.store.shards import MANIFEST, RangeReader, SetInfo, ShardWriter

# Test hook: SIGKILL this process after that many samples were written.
KILL_ENV = "CSST_PACK_KILL_AFTER"


@dataclass(frozen=True)
class PackOptions:
    quality: int = 95          # JPEG quality for images that are not JPEGs already
    lossless: bool = False     # keep PNG images as PNG instead of encoding them as JPEG
    shard_size: int = 1000     # samples per shard


def encode_restart_jpeg(rgb, quality):
    """An RGB array -> baseline 4:2:0 JPEG with restart markers every few MCUs (Pillow >= 11 writes them)."""
    from PIL import Image

    from csst_data.jpeg.structure import choose_restart_interval

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality), subsampling=2,
                              restart_marker_blocks=choose_restart_interval(rgb.shape[1], 16))
    return buf.getvalue()


def pack_image(data, options):
    """Image bytes -> (member suffix, bytes, what was done: "transcoded", "encoded" or "kept"), and (height, width)."""
    from csst_data import jpeg
    from csst_data.store.codecs import decode_image
    from csst_data.jpeg.lossless import transcode

    if is_jpeg(data):
        try:
            info = jpeg.parse(data)
        except jpeg.UnsupportedJpeg:
            from PIL import Image

            size = Image.open(io.BytesIO(data)).size
            return "jpg", bytes(data), "kept", (size[1], size[0])
        if info.baseline:
            out = jpeg.with_restart_index(jpeg.without_orientation(transcode(data)))
            return "jpg", out, "transcoded", (info.height, info.width)
        return "jpg", bytes(data), "kept", (info.height, info.width)
    if not is_png(data):
        raise ValueError("neither a JPEG nor a PNG image")
    rgb = decode_image(data)
    if options.lossless:
        return "png", bytes(data), "kept", rgb.shape[:2]
    return "jpg", jpeg.with_restart_index(encode_restart_jpeg(rgb, options.quality)), "encoded", rgb.shape[:2]


# -- work in pool processes --------------------------------------------------------------
_state = {}


def _init(datasets, options, num_classes):
    die_with_parent()
    _state.update(datasets=datasets, options=options, num_classes=num_classes, reader=RangeReader())


def _pack_one(task):
    """One sample -> (position, sample dict for ShardWriter, None, image bytes read) or (position, None, error, 0)."""
    i, s, key, shard, lo, ls, io_, is_, lp, ip = task
    ds, options, reader = _state["datasets"][s], _state["options"], _state["reader"]
    try:
        data = ds.read(reader, shard, io_, is_, ip)
        suffix, image, how, (h, w) = pack_image(data, options)
        sample = {"__key__": key, suffix: image}
        meta = {"source": ds.locate("image", key, shard, io_, ip),
                "image": how, "height": int(h), "width": int(w)}
        orientation = exif_orientation(data)
        if orientation != 1:
            # Pixels stay as stored (csst never rotates); the tag is reset in the stored copy and recorded here.
            meta["exif_orientation"] = orientation
        if ls != -1 or lp:
            label = ds.decode_label(ds.read(reader, shard, lo, ls, lp), key)
            if label.shape != (h, w):
                raise ValueError(f"image is {h}x{w} but its label is {label.shape[0]}x{label.shape[1]}")
            sample["label.npy.zst"] = encode_label(label, _state["num_classes"], key)
            meta["ignored_pixels"] = int((label == IGNORE).sum())
        sample["json"] = encode_json(meta)
        return i, sample, None, len(data)
    except Exception as e:  # noqa: BLE001 - every failure is recorded in failed.jsonl
        return i, None, f"{type(e).__name__}: {e}", 0


def _imap(tasks, workers, initargs):
    if workers <= 1:
        _init(*initargs)
        yield from map(_pack_one, tasks)
        return
    with mp_context().Pool(workers, initializer=_init, initargs=initargs) as pool:
        yield from pool.imap(_pack_one, tasks, chunksize=2)


# -- the run ---------------------------------------------------------------------------------
def pack(sources, out, options=PackOptions(), workers=2, rank=None, world_size=None, num_classes=None,
         class_names=None, progress=None):
    """Pack `sources` (datasets or SOURCE strings) into the shard set `out`; resumes a killed run.

    `progress(done, total)` is called as samples finish. Returns a summary dict:
    packed, skipped (already stored), failed, total, seconds, images_in_bytes,
    images_out_bytes, transcoded, encoded, kept, merged, manifest.
    """
    out = os.fspath(out)
    world_size = world_size or 1
    rank = rank or 0
    datasets = [as_dataset(s) for s in sources]
    if not datasets:
        raise ValueError("no sources given")
    num_classes, class_names = declared_classes(datasets, num_classes, class_names)
    items, seen = [], {}
    for s, ds in enumerate(datasets):
        cols = ds.samples(labels=None)
        for i, key in enumerate(cols["key"]):
            if key in seen:
                raise ValueError(f"key {key!r} is in {seen[key]} and in {ds.name}; pack them into separate shard sets")
            seen[key] = ds.name
            items.append((s, key, *(cols[c][i] for c in ("shard", "label_offset", "label_size", "image_offset",
                                                          "image_size", "label_path", "image_path"))))
    labelled = any(it[4] != -1 or it[6] for it in items)
    if labelled and num_classes is None:
        raise ValueError(f"the number of classes of {datasets[0].name} is unknown: give --num-classes")
    producer = {"name": "csst pack", "options": {**asdict(options), "sources": [ds.name for ds in datasets]}}
    fingerprint = hashlib.sha256(json.dumps([producer["options"], sorted(seen)]).encode()).hexdigest()
    # An object-store URL is written through a local staging folder (mirror.py).
    out, mirror = open_output(out, rank_prefix(rank) if world_size > 1 else "shard")
    os.makedirs(out, exist_ok=True)
    with OutputLock(out, f".lock-{rank_prefix(rank)}"):
        summary = _pack(datasets, items, out, options, workers, rank, world_size, num_classes, class_names,
                        labelled, producer, fingerprint, seen, progress, mirror)
    return close_output(mirror, summary)


def _pack(datasets, items, out, options, workers, rank, world_size, num_classes, class_names, labelled, producer,
          fingerprint, seen, progress, mirror=None):
    ranked = world_size > 1
    manifest_name = rank_manifest_name(rank) if ranked else MANIFEST
    check_resumable(out, manifest_name, producer, world_size, fixed_options=("quality", "lossless"))
    start_rank(out, rank, world_size)
    mine = [it for it in items if rank_of(it[1], world_size) == rank] if ranked else items
    fields = ["jpg"] + (["png"] if options.lossless else []) + (["label.npy.zst"] if labelled else []) + ["json"]
    pseudo = any(ds.pseudo for ds in datasets)
    info = SetInfo(num_classes=num_classes, class_names=class_names, fields=fields, producer=producer,
                   extra={"pseudo": pseudo, **({"rank": rank, "world_size": world_size} if ranked else {})})
    writer = ShardWriter(out, info, prefix=rank_prefix(rank) if ranked else "shard", maxcount=options.shard_size,
                         manifest=manifest_name, resume=True, on_finish=mirror.sync if mirror else None)
    todo = [it for it in mine if it[1] not in writer.existing_keys]
    kill_after = int(os.environ[KILL_ENV]) if os.environ.get(KILL_ENV) else None
    counts = {"transcoded": 0, "encoded": 0, "kept": 0, "failed": 0, "images_in_bytes": 0, "images_out_bytes": 0}
    done, total, start = len(mine) - len(todo), len(mine), time.perf_counter()
    if progress:
        progress(done, total)
    tasks = [(i, *it) for i, it in enumerate(todo)]
    try:
        for i, sample, error, read in _imap(tasks, workers, (datasets, options, num_classes)):
            if error is not None:
                record_failure(out, todo[i][1], datasets[todo[i][0]].name, error, rank, world_size)
                counts["failed"] += 1
            else:
                meta = json.loads(sample["json"])
                counts[meta["image"]] += 1
                counts["images_in_bytes"] += read
                counts["images_out_bytes"] += len(sample.get("jpg") or sample.get("png"))
                writer.write(sample)
                if kill_after is not None and len(writer.keys) - len(writer.existing_keys) >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            done += 1
            if progress:
                progress(done, total)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    merged = finish_rank(out, rank, world_size, fingerprint, len(writer.keys), counts["failed"],
                         mirror) if ranked else True
    return {"packed": len(todo) - counts["failed"], "skipped": len(mine) - len(todo), "total": total,
            "seconds": time.perf_counter() - start, "merged": merged, "rank": rank, "world_size": world_size,
            "manifest": os.path.join(out, MANIFEST if merged else manifest_name), "shards": len(writer.shards),
            **counts}
