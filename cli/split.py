"""`csst split SOURCE -o DIR`: a seeded labelled / unlabelled split of a source, as sample lists."""

import click

from csst_cli.options import SOURCE_HELP, folder_options, parse_sources, pop_folder_options


@click.command("split", help=f"""Draw a seeded split of SOURCE: OUTPUT/labeled.txt and OUTPUT/unlabeled.txt.

    SOURCE is {SOURCE_HELP}. The lists hold sample keys, one a line; read them
    back as SOURCE@OUTPUT/labeled.txt (those samples) and SOURCE@~OUTPUT/labeled.txt
    (the rest), e.g. the labelled 1/16 of Cityscapes train for `csst train` and
    the other 15/16 for `csst label`. The split files of the semi-supervised
    codebases (UniMatch, U2PL, ST++) are read the same way.

    With --index (a centroid index built over SOURCE) the split is class-aware:
    every class of SOURCE is in the labelled part whenever --fraction or --count
    leaves room for it (rarest classes first, each through the image holding it
    that adds the most classes, the seed's permutation deciding among equals).
    Without it the draw is uniform. At
    1-2 samples the class-aware split hardly varies with the seed (the few
    images that cover most classes); draw uniformly to vary it.

    \b
    csst split cityscapes:/data/cs:train --fraction 1/16 --seed 0 -o splits/cs-1_16
    csst split mapillary:/data/vistas:train --count 5 --index vistas.zarr -o splits/vistas-5shot
    csst train --data 'cityscapes:/data/cs:train@splits/cs-1_16/labeled.txt' ...
    csst label --input 'cityscapes:/data/cs:train@~splits/cs-1_16/labeled.txt' ...
    """)
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for labeled.txt and unlabeled.txt.")
@click.option("--fraction", help="Share of SOURCE to label: 1/16, 0.125 or 12.5% (rounded, at least one sample).")
@click.option("--count", type=click.IntRange(min=1), help="Number of samples to label instead (N images, N-shot).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the draw: the same seed, the same split.")
@click.option("--index", "index_path", type=click.Path(exists=True, file_okay=False),
              help="A centroid index over SOURCE: make the split class-aware.")
@click.option("--force", is_flag=True, help="Replace an existing split in OUTPUT.")
@folder_options
def split(source, output, fraction, count, seed, index_path, force, **kw):
    from csst_data.index import CentroidIndex
    from csst_data.index.splits import split_size, split_source, write_split

    (dataset,) = parse_sources([source], pop_folder_options(kw))
    try:
        total = len(dataset.samples(labels=None)["key"])
        size = split_size(total, fraction, count)
        index = CentroidIndex.open(index_path, check_stale=False) if index_path else None
        drawn = split_source(dataset, size, seed, index)
        labeled, unlabeled = write_split(drawn, output, force)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    click.echo(f"wrote {labeled} ({len(drawn.labeled)} samples) and {unlabeled} ({len(drawn.unlabeled)}), seed {seed}")
    if index is not None:
        names = index.class_names
        if drawn.missing_classes:
            click.echo(f"{len(drawn.missing_classes)} class(es) of the source are not in the labelled part "
                       f"(too few samples for them): {', '.join(names[c] for c in drawn.missing_classes)}", err=True)
        else:
            click.echo("every class of the source is in the labelled part")
