import math

import pytest

from csst_data.loader.schedules import (SCHEDULES, batch_for_crop, crop_for_epoch, default_sizes,
                                 iterations_per_epoch, schedule_table, total_iterations)


def test_default_sizes():
    assert default_sizes(768) == [384, 576, 768]
    assert default_sizes(512) == [256, 384, 512]
    # 400 and 600 are not multiples of 32: rounded to the nearest (half up).
    assert default_sizes(800) == [416, 608, 800]
    for full in (480, 640, 1024):
        sizes = default_sizes(full)
        assert sizes[-1] == full and all(s % 32 == 0 for s in sizes[:-1])
    with pytest.raises(ValueError, match="too small"):
        default_sizes(16)


@pytest.mark.parametrize("epochs", [6, 7, 180])
def test_crop_for_epoch_each_schedule(epochs):
    sizes = [384, 576, 768]
    crops = {s: [crop_for_epoch(s, e, epochs, sizes) for e in range(epochs)] for s in SCHEDULES}
    assert crops["constant"] == [768] * epochs
    # Non-plus: len(sizes) contiguous stages of (nearly) equal length.
    stages = [sizes[e * 3 // epochs] for e in range(epochs)]
    assert crops["coarse2fine"] == stages
    assert crops["fine2coarse"] == [sizes[2 - sizes.index(c)] for c in stages]
    lengths = [crops["coarse2fine"].count(s) for s in sizes]
    assert max(lengths) - min(lengths) <= 1
    assert crops["coarse2fine"] == sorted(crops["coarse2fine"])
    assert crops["fine2coarse"] == sorted(crops["fine2coarse"], reverse=True)
    # Plus: change every epoch, cycling.
    assert crops["coarse2fine+"] == [sizes[e % 3] for e in range(epochs)]
    assert crops["fine2coarse+"] == [sizes[2 - e % 3] for e in range(epochs)]
    assert all(a != b for a, b in zip(crops["coarse2fine+"], crops["coarse2fine+"][1:]))


def test_paper_example_changes_every_60_epochs():
    crops = [crop_for_epoch("coarse2fine", e, 180, default_sizes(800)) for e in range(180)]
    assert crops[:60] == [416] * 60 and crops[60:120] == [608] * 60 and crops[120:] == [800] * 60


def test_batch_for_crop_keeps_pixels_per_step():
    assert batch_for_crop(768, 16, 768) == 16
    assert batch_for_crop(768, 16, 384) == 64
    assert batch_for_crop(768, 16, 576) == round(16 * (768 / 576) ** 2) == 28
    assert batch_for_crop(800, 16, 416) == round(16 * (800 / 416) ** 2)
    assert batch_for_crop(512, 1, 1024) == 1  # never below 1
    with pytest.raises(ValueError):
        batch_for_crop(768, 0, 384)


def test_schedule_table_and_iterations():
    table = schedule_table("coarse2fine+", 4, 768, 8)
    assert table == [(384, 32), (576, 14), (768, 8), (384, 32)]
    table = schedule_table("fine2coarse", 3, 768, 8, sizes=[512, 768])
    assert table == [(768, 8), (768, 8), (512, 18)]
    # 1000 samples over 3 ranks: 334 per rank.
    assert iterations_per_epoch(1000, 3, 8) == math.ceil(334 / 8) == 42
    assert total_iterations(table, 1000, 3) == 42 + 42 + math.ceil(334 / 18)
    assert total_iterations(schedule_table("constant", 5, 768, 16), 160, 1) == 50


def test_bad_names_and_ranges():
    with pytest.raises(ValueError, match="unknown schedule 'coarse2fine\\+\\+'"):
        crop_for_epoch("coarse2fine++", 0, 10, [256, 512])
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_table("fast", 10, 768, 16)
    with pytest.raises(ValueError, match="epoch 10"):
        crop_for_epoch("constant", 10, 10, [256])
    with pytest.raises(ValueError, match="distinct"):
        crop_for_epoch("constant", 0, 10, [256, 256])
