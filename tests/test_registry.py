"""The generic registry: lookups, argument checks from signatures, and every registered factory builds."""

import pytest
import torch

from mnist_kit.data import DATASETS
from mnist_kit.errors import UserError
from mnist_kit.models import MODELS
from mnist_kit.optim import LOSSES, OPTIMIZERS, SCHEDULERS
from mnist_kit.registry import Registry

REGISTRIES = [DATASETS, MODELS, OPTIMIZERS, SCHEDULERS, LOSSES]


@pytest.fixture
def colors():
    reg = Registry("color")

    @reg.register("rgb")
    def rgb(red: int, green: int = 0, blue: int = 0):
        return (red, green, blue)

    return reg


def test_build_passes_table_arguments(colors):
    assert colors.build({"name": "rgb", "red": 1, "blue": 3}) == (1, 0, 3)


def test_unknown_name_lists_known_names_and_closest(colors):
    with pytest.raises(UserError, match=r"unknown color 'rbg'; known colors: rgb\. Did you mean 'rgb'\?"):
        colors.build({"name": "rbg", "red": 1})


def test_unknown_argument_names_the_parameters(colors):
    with pytest.raises(UserError, match=r"takes no argument 'gren'\. Did you mean 'green'\? "
                                        r"Its parameters: red, green=0, blue=0"):
        colors.build({"name": "rgb", "red": 1, "gren": 2})


def test_missing_argument_is_named(colors):
    with pytest.raises(UserError, match="needs argument"):
        colors.build({"name": "rgb"})


def test_supplied_arguments_are_not_user_parameters(colors):
    assert list(colors.user_parameters("rgb", {"red": None})) == ["green", "blue"]
    assert colors.build({"name": "rgb"}, red=5) == (5, 0, 0)


def test_table_without_name_is_an_error(colors):
    with pytest.raises(UserError, match="needs a 'name'"):
        colors.build({"red": 1})


def test_builtin_registries_have_what_recipes_need():
    assert {"adam", "adamw", "sgd"} <= set(OPTIMIZERS.names())
    assert {"step", "cosine", "onecycle", "none"} <= set(SCHEDULERS.names())
    assert "mnist" in DATASETS.names()
    assert "mlp" in MODELS.names()


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_and_runs(name):
    model = MODELS.build(name, input_shape=(1, 28, 28), num_classes=10)
    model.eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_takes_a_step(name):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = OPTIMIZERS.build(name, params=[weight])
    (weight**2).sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), torch.ones(3))


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_every_scheduler_runs_a_whole_schedule(name):
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = SCHEDULERS.build(name, optimizer=optimizer, epochs=3, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(lr >= 0 for lr in lrs)


def test_step_scheduler_decays_per_epoch():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    scheduler = SCHEDULERS.build({"name": "step", "step_size": 2, "gamma": 0.5}, optimizer=optimizer,
                                 epochs=5, steps_per_epoch=3)
    lrs = []
    for _ in range(5 * 3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    per_epoch = lrs[::3]
    assert per_epoch == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert len(set(lrs[0:3])) == 1  # constant within an epoch


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_lowest_for_the_right_class(name):
    loss = LOSSES.build(name)
    target = torch.tensor([2])
    good = torch.log_softmax(torch.tensor([[0.0, 0.0, 5.0]]), dim=1)
    bad = torch.log_softmax(torch.tensor([[5.0, 0.0, 0.0]]), dim=1)
    assert loss(good, target) < loss(bad, target)
