"""Object storage: shard sets at `s3://`, `gs://`, `az://` and `http(s)://` URLs.

A shard set is a folder of tar files plus manifest.json; in object storage it
is a prefix holding the same objects. This module is the one place that talks
to object stores, through obstore (Rust's `object_store`): it signs requests
with the credentials of the usual environment (`AWS_ACCESS_KEY_ID`,
`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
`AZURE_STORAGE_ACCOUNT_NAME`, ...), retries throttling (503 SlowDown) and
timeouts with exponential backoff and jitter, coalesces nearby byte ranges
(`get_ranges`) and refuses a server that ignores a Range header, and uploads
large objects in parts. An object appears whole or not at all, so a put is
atomic without the temporary names a POSIX folder needs.

Clients are made lazily, one per bucket (or HTTP host) per process: a client
holds a thread pool and connections that do not survive a fork into DataLoader
workers. `STATS` counts this process's requests and bytes (benchmarks).

Every function takes a full URL and raises `StorageError` (a ValueError, so
commands report it as bad input) naming that URL, or `NotFound`.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import threading
import urllib.parse
from collections.abc import Iterator, Sequence

SCHEMES = ("s3", "gs", "az", "abfs", "http", "https")
# Retries: throttling, 5xx replies, refused connections and timeouts are retried with backoff
# doubling from 100 ms to 15 s (with jitter, object_store's policy) until RETRY_SECONDS have passed
# (CSST_STORAGE_RETRY replaces it). The budget is time, not a count: object_store stops at whichever
# limit comes first, and 10 retries of a refused connection were spent in about 4 s.
RETRY_SECONDS = 180
_MAX_RETRIES = 1_000_000  # never the limit that stops: the time budget is


def _retry_config():
    seconds = float(os.environ.get("CSST_STORAGE_RETRY", RETRY_SECONDS))
    return {"max_retries": _MAX_RETRIES, "retry_timeout": datetime.timedelta(seconds=seconds),
            "backoff": {"init_backoff": datetime.timedelta(milliseconds=100),
                        "max_backoff": datetime.timedelta(seconds=15), "base": 2.0}}


TIMEOUT = "60s"  # one request, connect to last byte (CSST_STORAGE_TIMEOUT replaces it)

STATS = {"gets": 0, "bytes": 0, "puts": 0}
_stats_lock = threading.Lock()  # prefetch threads count too
_clients = {}  # (pid, scheme://authority, environment) -> obstore store
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "CSST_STORAGE")


class StorageError(ValueError):
    """An object store request failed; the message names the URL."""


class NotFound(StorageError):
    """The object does not exist."""


class NoSuchBucket(StorageError):
    """The bucket (or container) of a URL does not exist: a wrong URL, not a missing object."""


def is_url(text: object) -> bool:
    """Whether `text` names an object-store location (scheme://...), not a local path."""
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def join(base: str | os.PathLike, *names: str) -> str:
    """`base/name` for a URL or a local path."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *names])
    return os.path.join(base, *names)


def basename(path: str | os.PathLike) -> str:
    """The last part of a URL or a local path."""
    return posixpath.basename(str(path).rstrip("/")) if is_url(path) else os.path.basename(path)


def _count(**kw):
    with _stats_lock:
        for k, v in kw.items():
            STATS[k] += v


def environment() -> dict[str, str]:
    """The variables of this process's environment that choose object stores and credentials."""
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


def set_environment(env: dict[str, str]) -> None:
    """Make `env` (from `environment()`, in another process) this process's object-store environment."""
    for k in [k for k in os.environ if k.startswith(_ENV_PREFIXES) and k not in env]:
        del os.environ[k]
    os.environ.update(env)


def in_use() -> bool:
    """Whether this process has made an object-store client (see workers.mp_context)."""
    pid = os.getpid()
    return any(key[0] == pid for key in _clients)


def _split(url):
    """URL -> (client, key within the bucket or host)."""
    parts = urllib.parse.urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.netloc:
        raise StorageError(f"{url}: not an object-store URL (expected {', '.join(s + '://' for s in SCHEMES)})")
    root = f"{scheme}://{parts.netloc}"
    # Per process (clients do not survive a fork) and per environment (credentials may change).
    env = tuple(sorted(environment().items()))
    client = _clients.get((os.getpid(), root, env))
    if client is None:
        client = _clients[(os.getpid(), root, env)] = _make_client(root, scheme)
    return client, urllib.parse.unquote(parts.path.lstrip("/"))


def _make_client(root, scheme):
    from obstore.store import from_url

    options = {"timeout": os.environ.get("CSST_STORAGE_TIMEOUT", TIMEOUT), "connect_timeout": "10s"}
    # Client options given here replace those object_store reads from the environment, so
    # AWS_ALLOW_HTTP is honoured by hand; a plain http:// endpoint is allowed as the user asked for it.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if scheme == "http" or os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true") or \
            (scheme == "s3" and endpoint.startswith("http://")):
        options["allow_http"] = True
    kwargs = {}
    if scheme == "s3" and not os.environ.get("AWS_ACCESS_KEY_ID"):
        # No keys in the environment: take them from ~/.aws profiles (AWS_PROFILE) when boto3 is installed.
        try:
            from obstore.auth.boto3 import Boto3CredentialProvider

            kwargs["credential_provider"] = Boto3CredentialProvider()
        except Exception:
            pass
    try:
        return from_url(root, client_options=options, retry_config=_retry_config(), **kwargs)
    except Exception as e:
        raise StorageError(f"{root}: cannot make a client ({_reason(e)})") from None


def _reason(e):
    """One line of an obstore error: its first line, less the request dump."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def _call(url, what, fn, *args, **kwargs):
    from obstore import exceptions as ox

    client, key = _split(url)
    try:
        return fn(client, key, *args, **kwargs)
    except (FileNotFoundError, ox.NotFoundError):
        if _bucket_missing(url):
            raise NoSuchBucket(f"{url}: no such bucket {urllib.parse.urlsplit(str(url)).netloc!r}") from None
        raise NotFound(f"{url}: no such object") from None
    except (PermissionError, ox.PermissionDeniedError, ox.UnauthenticatedError) as e:
        raise StorageError(f"{url}: access denied; check the credentials in the environment "
                           f"({_reason(e)})") from None
    except Exception as e:
        if "403" in str(e) or "InvalidAccessKeyId" in str(e) or "SignatureDoesNotMatch" in str(e):
            raise StorageError(f"{url}: access denied; check the credentials in the environment "
                               f"({_reason(e)})") from None
        raise StorageError(f"{url}: {what} failed ({_reason(e)})") from None


def _bucket_missing(url):
    """Whether a URL's bucket is missing (asked once an object was not found: a HEAD's 404 does
    not say which). Plain HTTP has no buckets."""
    import obstore
    from obstore import exceptions as ox

    if urllib.parse.urlsplit(str(url)).scheme.lower() in ("http", "https"):
        return False
    client, _ = _split(url)
    try:
        obstore.list_with_delimiter(client, None)
        return False
    except (FileNotFoundError, ox.NotFoundError):
        return True
    except Exception as e:
        return "NoSuchBucket" in str(e) or "ContainerNotFound" in str(e)


def read(url: str, offset: int = 0, size: int | None = None) -> bytes:
    """`size` bytes at `offset` of the object (the whole object from `offset` when size is None)."""
    import obstore

    if size is None:
        data = _call(url, "GET", lambda c, k: obstore.get(c, k).bytes())
        data = bytes(data)[offset:]
    else:
        if size == 0:
            return b""
        data = bytes(_call(url, "GET", lambda c, k: obstore.get_range(c, k, start=offset, length=size)))
        if len(data) != size:
            raise StorageError(f"{url}: short read at byte {offset} ({len(data)} of {size} bytes); truncated object?")
    _count(gets=1, bytes=len(data))
    return data


def read_ranges(url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The bytes of several (offset, size) ranges of one object; ranges less than
    1 MiB apart are fetched by one request."""
    import obstore

    starts = [int(o) for o, _ in ranges]
    ends = [int(o) + int(n) for o, n in ranges]
    lo, hi = min(starts), max(ends)
    # One request when the ranges span little more than they hold (a sample's members lie a tar header apart).
    if hi - lo <= sum(e - s for s, e in zip(starts, ends)) + (1 << 20):
        blob = read(url, lo, hi - lo)
        return [blob[s - lo:e - lo] for s, e in zip(starts, ends)]
    out = _call(url, "GET", lambda c, k: obstore.get_ranges(c, k, starts=starts, ends=ends))
    out = [bytes(b) for b in out]
    _count(gets=len(out), bytes=sum(map(len, out)))
    return out


def stream(url: str, chunk: int = 8 << 20) -> Iterator[bytes]:
    """Iterate the object's bytes in chunks (one GET, retried by the client only before the first byte)."""
    import obstore

    result = _call(url, "GET", lambda c, k: obstore.get(c, k))
    _count(gets=1)
    try:
        for block in result.stream(min_chunk_size=chunk):
            _count(bytes=len(block))
            yield bytes(block)
    except Exception as e:
        raise StorageError(f"{url}: GET failed while streaming ({_reason(e)})") from None


def head(url: str) -> dict:
    """{"size", "etag"} of an object."""
    import obstore

    meta = _call(url, "HEAD", lambda c, k: obstore.head(c, k))
    return {"size": int(meta["size"]), "etag": meta.get("e_tag")}


def exists(url: str) -> bool:
    """Whether the object exists."""
    try:
        head(url)
        return True
    except NotFound:
        return False


def listdir(url: str) -> dict[str, dict] | None:
    """{name: {"size", "etag"}} of the objects directly under the prefix `url`
    (None where the store cannot list, as a plain HTTP server)."""
    import obstore

    if urllib.parse.urlsplit(str(url)).scheme.lower() in ("http", "https"):
        return None
    prefix = str(url).rstrip("/")

    def run(client, key):
        return obstore.list_with_delimiter(client, key.rstrip("/") + "/" if key else None)

    listing = _call(prefix, "LIST", run)
    return {posixpath.basename(o["path"]): {"size": int(o["size"]), "etag": o.get("e_tag")}
            for o in listing["objects"]}


def write(url: str, data: bytes) -> None:
    """Store `data` (bytes) as the object `url`: all of it or nothing."""
    import obstore

    _call(url, "PUT", lambda c, k: obstore.put(c, k, bytes(data)))
    _count(puts=1)


def upload(url: str, path: str | os.PathLike) -> None:
    """Upload a local file to `url` (in parts when it is larger than 5 MiB)."""
    import obstore
    from pathlib import Path

    _call(url, "PUT", lambda c, k: obstore.put(c, k, Path(path)))
    _count(puts=1)


def delete(url: str) -> None:
    """Remove the object."""
    import obstore

    _call(url, "DELETE", lambda c, k: obstore.delete(c, k))
