"""Parsing of the list-valued options shared by several commands."""

import click


def parse_floats(text, name, positive=True):
    """'0.5,1.0,2.0' -> (0.5, 1.0, 2.0); a click error naming the option otherwise."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=name) from None
    if not values or (positive and min(values) <= 0):
        raise click.BadParameter(f"expected {'positive ' if positive else ''}numbers, got {text!r}", param_hint=name)
    return values


def parse_size(text, name):
    """'512' or '512,1024' -> (h, w); None stays None."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected N or H,W, got {text!r}", param_hint=name) from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"expected N or H,W of positive integers, got {text!r}", param_hint=name)
    return (parts[0], parts[-1])


def parse_source(text):
    """A source argument -> a path, or a source dict for the file layouts:

    PATH (a shard set, or a folder/glob of mask PNGs),
    cityscapes:ROOT[:SPLIT] (default split val), voc:ROOT[:SPLIT] (default val),
    masks:MASKS[:IMAGES] (mask PNGs paired by file stem with an image folder).
    """
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("cityscapes", "voc", "masks") or not rest:
        return text
    path, _, extra = rest.partition(":")
    if kind == "masks":
        return {"kind": "masks", "path": path, "images": extra or None}
    return {"kind": kind, "path": path, "split": extra or "val"}
