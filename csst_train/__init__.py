"""Models, losses, trainer, evaluation and labelling for csst."""
