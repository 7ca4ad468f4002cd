"""Batched augmentations: shapes kept, identity when switched off, blank borders stay blank, seeded."""

import pytest
import torch

from mnist_kit.augment import AUGMENTATIONS
from mnist_kit.data import normalize
from mnist_kit.errors import UserError

BLANK = (0.0 - 0.1307) / 0.3081


@pytest.fixture(scope="module")
def batch(splits):
    return normalize(splits.train_images[:64], splits.mean, splits.std)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_keeps_shape_and_range(batch, name):
    torch.manual_seed(0)
    out = AUGMENTATIONS.build(name, fill=BLANK)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= BLANK - 1e-4 and out.max() <= batch.max() + 1e-4  # interpolation never leaves the range
    assert not torch.equal(out, batch)
    torch.manual_seed(0)
    assert torch.equal(out, AUGMENTATIONS.build(name, fill=BLANK)(batch))  # seeded: reproducible


def test_affine_with_nothing_to_do_is_the_identity(batch):
    same = AUGMENTATIONS.build({"name": "affine", "degrees": 0, "scale": 0, "shift": 0}, fill=BLANK)(batch)
    torch.testing.assert_close(same, batch, atol=1e-4, rtol=0)


def test_shift_moves_ink_and_fills_with_blank(batch):
    torch.manual_seed(1)
    shift = AUGMENTATIONS.build({"name": "affine", "degrees": 0, "scale": 0, "shift": 4}, fill=BLANK)
    assert (shift(batch) - batch).abs().amax() > 1  # ink moved
    ink = torch.full((8, 1, 28, 28), 2.0)  # all ink: whatever is shifted in from outside must be blank
    moved = shift(ink)
    rows_blank = (moved - BLANK).abs().lt(1e-3).all(dim=3).any(dim=2)  # a whole blank row per image...
    cols_blank = (moved - BLANK).abs().lt(1e-3).all(dim=2).any(dim=2)  # ...or column
    assert (rows_blank | cols_blank).float().mean() >= 0.5  # shifts of over a pixel (most of them) leave one
    assert moved.amax() <= 2.0 + 1e-4 and moved.amin() >= BLANK - 1e-4


def test_bad_augmentation_values_are_refused():
    with pytest.raises(UserError, match="rejected"):
        AUGMENTATIONS.build({"name": "affine", "scale": 1.5}, fill=BLANK)


def test_background_lifts_the_paper_to_a_grey_and_keeps_the_ink(batch):
    torch.manual_seed(2)
    out = AUGMENTATIONS.build({"name": "background", "level": 2.0, "p": 1.0}, fill=BLANK)(batch)
    paper = batch <= BLANK + 1e-6
    grey = out[paper.expand_as(out)].view(-1)
    assert grey.min() >= BLANK and grey.max() <= BLANK + 2.0 + 1e-6 and grey.mean() > BLANK + 0.5
    levels = torch.where(paper, out, torch.full_like(out, float("inf"))).flatten(1).amin(dim=1)
    assert torch.allclose(torch.where(paper, out, 0), torch.where(paper, levels.view(-1, 1, 1, 1), 0))  # one grey
    ink = batch > BLANK + 2.0
    assert torch.equal(out[ink], batch[ink])  # ink brighter than any grey is untouched
    off = AUGMENTATIONS.build({"name": "background", "p": 0.0}, fill=BLANK)(batch)
    assert torch.equal(off, batch)
