"""The `csst` command: a click group whose subcommands load on first use.

Loading lazily keeps `csst --help` and the storage commands free of torch's
import time; each command lives in the module named below.
"""

import importlib

import click

# name -> "module:attribute" of the click command
COMMANDS = {
    "synth": "csst_cli.synth:synth",
    "verify": "csst_cli.verify:verify",
    "index": "csst_cli.index:index",
    "train": "csst_cli.train:train",
    "eval": "csst_cli.evaluate:evaluate",
    "label": "csst_cli.label:label",
    "pack": "csst_cli.pack:pack",
    "split": "csst_cli.split:split",
    "predict": "csst_cli.predict:predict",
    "bench": "csst_cli.bench:bench",
    "demo": "csst_cli.demo:demo",
}

HELP = {
    "synth": "Write the embedded synthetic street-scene dataset.",
    "verify": "Check a shard set against its manifest.",
    "index": "Build, merge and inspect centroid indexes.",
    "train": "Train a segmentation model (teacher or student).",
    "eval": "Evaluate a checkpoint: mIoU and per-class IoU.",
    "label": "Write pseudo-label shards with a trained teacher.",
    "pack": "Pack any dataset into shards ready for fast training.",
    "split": "Draw a seeded labelled / unlabelled split (1/16, N-shot), class-aware with an index.",
    "predict": "Write a checkpoint's predictions as PNG files.",
    "bench": "Measure IO, loader and training throughput on your own data.",
    "demo": "Run the whole self-training pipeline on synthetic data.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            return _missing(name)
        return getattr(mod, attr)

    def format_commands(self, ctx, formatter):
        # Short help from the table above, so listing commands imports nothing.
        rows = [(name, HELP[name]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing(name):
    @click.command(name, help=f"{HELP[name]} (not available in this build)")
    def cmd():
        raise click.ClickException(f"`csst {name}` is not available in this build")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="csst")
def cli():
    """csst: semi-supervised semantic segmentation by efficient self-training.

    Pipeline: synth -> train (teacher) -> label -> index build -> train
    (student) -> eval. Run `csst COMMAND --help` for each command's options.
    """


if __name__ == "__main__":
    cli()
