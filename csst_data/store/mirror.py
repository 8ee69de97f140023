"""Writing a shard set to object storage: a local staging folder mirrored to a URL.

`csst label -o s3://...` and `csst pack -o s3://...` write exactly as they do
to a folder (ShardWriter, csst_data/runs/skeleton.py), into a staging folder on local disk;
a `Mirror` keeps the URL in step with it:

- `pull()`, before the run: objects the URL has and staging lacks (this rank's
  shards, and every manifest, done marker and failure list) are downloaded, so
  a rerun on another machine, or after the staging folder was lost, resumes
  from what the URL holds, with every key stored once;
- `sync(manifest)`, after each finished shard (ShardWriter's `on_finish`):
  the manifest's bytes are read once, every shard it lists that the URL lacks
  is uploaded (in parts when large), then those manifest bytes. An object
  appears whole or not at all, so a reader of the URL never sees a manifest
  listing a shard that is not there, and a kill loses at most the open shard;
- `push()`, at the end: part manifests (each after its shards) and failure
  lists, then done markers, then manifest.json last; a shard of this writer
  that no manifest lists (a run killed between the two uploads) is deleted.

Staging lives in `$CSST_STAGING` (default: the system's temporary folder),
one subfolder per URL, and is removed once the run has written manifest.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from csst_data.store import storage
from csst_data.store.shards import MANIFEST, TMP_SUFFIX


def staging_dir(url: str) -> str:
    """The local staging folder of `url`: under $CSST_STAGING (default: the temporary folder), by the URL's hash."""
    base = os.environ.get("CSST_STAGING") or os.path.join(tempfile.gettempdir(), "csst-staging")
    name = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(base, name)


def _order(name):
    """Upload order: part manifests and failure lists, done markers, manifest.json."""
    if name.endswith(".tar"):
        return 0
    if name == MANIFEST:
        return 3
    if name.startswith("done-"):
        return 2
    return 1


class Mirror:
    """A local staging folder kept in step with a shard set's URL (see the module docstring)."""

    def __init__(self, url: str, staging: str | None = None, prefix: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.staging = staging or staging_dir(self.url)
        self.prefix = prefix  # this writer's shard prefix: its unlisted shards at the URL are removed by push()
        self.remote = {}  # name -> size of what the URL holds, as far as this process knows
        self.confirmed = {}  # shard name -> sha256 of the version known to be at the URL (listed there, or sent)
        self.pulled = {}  # JSON file name -> the bytes downloaded: not sent back unless changed here
        self.uploads = 0

    def refresh(self) -> dict[str, int]:
        """List the URL again: {name: size}."""
        self.remote = {n: m["size"] for n, m in (storage.listdir(self.url) or {}).items()}
        return self.remote

    def pull(self, shard_prefix: str | None = None, shards: bool = True) -> None:
        """Download what the URL holds and staging lacks: every JSON file, and (with `shards`)
        the shards of `shard_prefix` (this rank's; all when None)."""
        os.makedirs(self.staging, exist_ok=True)
        for name, size in sorted(self.refresh().items(), key=lambda kv: _order(kv[0])):
            wanted = name.endswith((".json", ".jsonl")) or (shards and name.endswith(".tar") and (
                shard_prefix is None or name.startswith(shard_prefix + "-")))
            path = os.path.join(self.staging, name)
            if not wanted or (name.endswith(".tar") and os.path.exists(path) and os.path.getsize(path) == size):
                continue
            tmp = path + TMP_SUFFIX
            with open(tmp, "wb") as f:
                for block in storage.stream(storage.join(self.url, name)):
                    f.write(block)
            os.replace(tmp, path)
            if not name.endswith(".tar"):
                with open(path, "rb") as f:
                    self.pulled[name] = f.read()
        # Shards a manifest at the URL lists are complete there (uploaded before the manifest).
        for name in os.listdir(self.staging):
            if name.endswith(".json") and name in self.remote:
                with open(os.path.join(self.staging, name), "rb") as f:
                    for entry in json.load(f).get("shards", []):
                        self.confirmed[entry["name"]] = entry.get("sha256")

    def _upload(self, name, data=None):
        url = storage.join(self.url, name)
        if data is None:
            storage.upload(url, os.path.join(self.staging, name))
            self.remote[name] = os.path.getsize(os.path.join(self.staging, name))
        else:
            storage.write(url, data)
            self.remote[name] = len(data)
        self.uploads += 1

    def sync(self, manifest: str = MANIFEST, data: bytes | None = None) -> None:
        """Upload the shards `manifest` lists that the URL lacks, then the manifest itself
        (`data`: its bytes, when the caller has read them)."""
        if data is None:
            path = os.path.join(self.staging, manifest)
            if not os.path.exists(path):
                return
            with open(path, "rb") as f:
                data = f.read()  # these bytes, not a later version listing shards not yet uploaded
        for entry in json.loads(data).get("shards", []):
            if self.confirmed.get(entry["name"]) != entry.get("sha256"):
                self._upload(entry["name"])
                self.confirmed[entry["name"]] = entry.get("sha256")
        self._upload(manifest, data)

    def push(self, merged: bool = False) -> None:
        """Upload everything in staging that the URL lacks or holds in another version, in `_order`;
        this writer's failure lists that a rerun removed (no failures any more) are removed from the
        URL too (with `merged`, the run's merged failed.jsonl as well)."""
        files = {}  # every file but shards (they go up with the manifest that lists them), read once
        for name in os.listdir(self.staging):
            path = os.path.join(self.staging, name)
            if not name.endswith((".tar", TMP_SUFFIX)) and not name.startswith(".") and os.path.isfile(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
        mine = {"failed.jsonl" if self.prefix in (None, "shard") else f"failed-{self.prefix}.jsonl"}
        if merged:
            mine.add("failed.jsonl")
        for name in [n for n in self.refresh() if n in mine and n not in files]:
            storage.delete(storage.join(self.url, name))
        listed = set()
        for name in sorted(files, key=lambda n: (_order(n), n)):
            data = files[name]
            entries = json.loads(data or b"{}").get("shards") if name.endswith(".json") else None
            listed.update(e["name"] for e in entries or ())
            if self.pulled.get(name) == data:
                continue  # another writer's file (or ours, unchanged): never send an old copy back
            if entries is not None:
                self.sync(name, data)
            else:
                self._upload(name, data)
        # A shard of ours that no manifest lists: uploaded by a run killed before its manifest was.
        for name in list(self.remote):
            if name.endswith(".tar") and self.prefix and name.startswith(self.prefix + "-") and name not in listed:
                storage.delete(storage.join(self.url, name))
                del self.remote[name]

    def exists(self, name: str) -> bool:
        """Whether the URL holds `name` (listed again when not known)."""
        return name in self.remote or name in self.refresh()

    def cleanup(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.staging, ignore_errors=True)


def open_output(out: str, shard_prefix: str) -> tuple[str, Mirror | None]:
    """(folder to write, Mirror or None) for an output that may be a URL: a URL's staging
    folder is brought up to date with it first (this rank's shards, every JSON file)."""
    if not storage.is_url(out):
        return out, None
    mirror = Mirror(out, prefix=shard_prefix)
    mirror.pull(shard_prefix)
    return mirror.staging, mirror


def close_output(mirror: Mirror | None, summary: dict) -> dict:
    """After a run into `open_output`'s folder: upload what is left, name the manifest by its URL,
    and drop the staging folder once manifest.json is up. Returns `summary`."""
    if mirror is not None:
        mirror.push(merged=summary["merged"])
        summary["manifest"] = storage.join(mirror.url, os.path.basename(summary["manifest"]))
        if summary["merged"]:
            mirror.cleanup()
    return summary
