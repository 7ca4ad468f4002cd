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
    moved = AUGMENTATIONS.build({"name": "affine", "degrees": 0, "scale": 0, "shift": 4}, fill=BLANK)(batch)
    assert (moved - batch).abs().amax() > 1  # ink moved
    assert torch.allclose(moved[..., 0, :], torch.full_like(moved[..., 0, :], BLANK), atol=0.05)  # top row blank


def test_bad_augmentation_values_are_refused():
    with pytest.raises(UserError, match="rejected its arguments"):
        AUGMENTATIONS.build({"name": "affine", "scale": 1.5}, fill=BLANK)
