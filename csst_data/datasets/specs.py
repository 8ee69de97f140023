"""Dataset spec files: a `FolderSpec`'s fields in JSON or TOML (docs/formats.md)."""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace

from csst_data.datasets.folder import FolderDataset, FolderSpec

SPEC_EXTS = (".json", ".toml")
SPEC_KEYS = {f.name for f in fields(FolderSpec)} - {"preset", "split_name"}  # what a spec file may hold


def read_spec(path: str | os.PathLike, **overrides: object) -> FolderDataset:
    """A dataset spec file (JSON or TOML) -> FolderDataset. Relative paths
    resolve against `data_root`, which resolves against the file's folder."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from e
    try:
        if path.lower().endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            obj = tomllib.loads(text.decode("utf-8"))
        else:
            obj = json.loads(text)
    except Exception as e:
        raise ValueError(f"{path}: not a valid spec file ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a spec file holds one object of dataset fields")
    unknown = sorted(set(obj) - SPEC_KEYS - {"type"})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(SPEC_KEYS))})")
    _check_types(obj, path)
    here = os.path.dirname(os.path.realpath(path))
    root = os.path.normpath(os.path.join(here, obj.get("data_root") or "."))
    kw = {k: v for k, v in obj.items() if k in SPEC_KEYS}
    kw["data_root"] = root
    for k in ("img_dir", "ann_dir", "split"):
        if kw.get(k) is not None:
            kw[k] = os.path.normpath(os.path.join(root, kw[k]))
    try:
        spec = _checked_spec(kw, path)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return FolderDataset(replace(spec, **{k: v for k, v in overrides.items() if v is not None}))


# The JSON / TOML type each field must have (null is always allowed: the field's default).
_TYPES = {
    "data_root": (str, "a string"), "img_dir": (str, "a string"), "ann_dir": (str, "a string"),
    "img_suffix": (str, "a string"), "seg_map_suffix": (str, "a string"), "split": (str, "a string"),
    "unknown_color": (str, "a string"), "keys": (str, "a string"),
    "classes": (list, "a list of names"), "palette": (list, "a list of [r, g, b]"),
    "label_map": (dict, "a table of raw value -> class id"),
    "num_classes": (int, "an integer"), "ignore_index": (int, "an integer"), "reduce_zero_label": (bool, "true or false"),
}


def _check_types(obj, path):
    """One line naming the file and the field whose value has the wrong type (e.g. `"classes": "a,b"`,
    which would otherwise read as one class per character)."""
    for k, (kind, what) in _TYPES.items():
        v = obj.get(k)
        if v is None:
            continue
        wrong = not isinstance(v, kind) or (kind is int and isinstance(v, bool))
        if wrong:
            raise ValueError(f"{path}: field {k!r} must be {what}, not {type(v).__name__} ({json.dumps(v)[:40]})")


def _checked_spec(kw, where):
    if kw.get("palette") is not None:
        pal = kw["palette"]
        if not all(isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                   for c in pal):
            raise ValueError("palette must be a list of [r, g, b] with values in 0..255")
        kw["palette"] = tuple(tuple(c) for c in pal)
        if len(set(kw["palette"])) != len(kw["palette"]):
            raise ValueError("palette lists a colour twice")
    if kw.get("classes") is not None:
        if not all(isinstance(c, str) for c in kw["classes"]):
            raise ValueError("classes must be a list of names")
        kw["classes"] = tuple(kw["classes"])
    if kw.get("label_map") is not None:
        try:
            kw["label_map"] = {int(a): int(b) for a, b in dict(kw["label_map"]).items()}
        except (TypeError, ValueError):
            raise ValueError("label_map must map integer raw values to integer class ids") from None
    for k in ("reduce_zero_label",):
        if k in kw and not isinstance(kw[k], bool):
            raise ValueError(f"{k} must be true or false")
    return FolderSpec(**kw)
