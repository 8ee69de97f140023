"""Rich tables shared by several commands."""

import numpy as np


def iou_table(iou, class_names=None, title="per-class IoU"):
    """A rich Table of per-class IoU (percent) with the mean in the last row."""
    from rich.table import Table

    iou = np.asarray(iou, dtype=np.float64)
    names = list(class_names) if class_names else [str(i) for i in range(len(iou))]
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, v in zip(names, iou):
        table.add_row(str(name), "-" if np.isnan(v) else f"{100 * v:.2f}")
    miou = np.nanmean(iou) if np.isfinite(iou).any() else float("nan")
    table.add_row("[bold]mean[/bold]", "-" if np.isnan(miou) else f"[bold]{100 * miou:.2f}[/bold]")
    return table
