"""Recipes: loading, --set overrides, schema and factory checks, plugins, fallback chains."""

import pytest

from mnist_kit.assemble import check_recipe
from mnist_kit.errors import UserError
from mnist_kit.models import MODELS, count_parameters
from mnist_kit.recipe import RECIPES_DIR, apply_overrides, list_recipes, load_recipe, parse_override, recipe_text
from tests.conftest import QUICK, write_recipe


@pytest.mark.parametrize("name", [p.stem for p in sorted(RECIPES_DIR.glob("*.toml"))])
def test_every_recipe_loads_builds_and_has_a_description(name):
    recipe = load_recipe(name)
    parts, images = check_recipe(recipe)  # every part of it and of its fallback chain builds on the CPU
    assert recipe.name == name and images > 0 and count_parameters(parts.model) > 0
    assert recipe.description
    assert "#" in recipe_text(name)  # recipes are documentation: they carry comments


def test_baseline_resolves_every_default():
    config = load_recipe("baseline").config
    assert config["data"] == {"dataset": "mnist", "batch_size": 64, "validation": 0, "split_seed": 0}
    assert config["train"]["epochs"] == 25
    assert config["train"]["loss"] == {"name": "nll"}
    assert config["optimizer"]["betas"] == [0.9, 0.999]  # factory default filled in from the signature
    assert config["fallback"] == {"min_test_accuracy": 0.9, "recipe": "improved"}


def test_list_recipes_gives_names_and_descriptions():
    names = dict(list_recipes())
    assert {"baseline", "improved"} <= set(names)
    assert all(names.values())


@pytest.mark.parametrize("text, expected", [
    ("train.epochs=1", (["train", "epochs"], 1)),
    ("optimizer.lr=3e-4", (["optimizer", "lr"], 3e-4)),
    ("train.device=cpu", (["train", "device"], "cpu")),
    ('train.device="cpu"', (["train", "device"], "cpu")),
    ("model.hidden=[64, 32]", (["model", "hidden"], [64, 32])),
    ("model.batchnorm=false", (["model", "batchnorm"], False)),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text, message", [
    ("train.epochs", "expected KEY=VALUE"),
    ("model.hidden=[64,", "cannot parse value"),
    ("trian.epochs=1", "unknown section 'trian'.*Did you mean 'train'"),
    ("train.epoch=1", "unknown key 'epoch' in \\[train\\].*Did you mean 'epochs'"),
    ("train=1", "address a value"),
])
def test_bad_overrides_are_named(text, message):
    with pytest.raises(UserError, match=message):
        apply_overrides({}, [text])


def test_overrides_reach_the_resolved_recipe():
    recipe = load_recipe("baseline", ["train.epochs=1", "optimizer.lr=0.01", "model.dropout=0.1"])
    assert recipe.config["train"]["epochs"] == 1
    assert recipe.config["optimizer"]["lr"] == 0.01
    assert recipe.config["model"]["dropout"] == 0.1
    assert recipe.overrides == {"train.epochs": 1, "optimizer.lr": 0.01, "model.dropout": 0.1}
    assert load_recipe("baseline", recipe.overrides).config == recipe.config  # a dict of values works too


def test_override_of_a_factory_argument_it_does_not_take():
    with pytest.raises(UserError, match="optimizer 'adam' takes no argument 'momentum'.*Its parameters: lr="):
        load_recipe("baseline", ["optimizer.momentum=0.9"])


def test_override_can_switch_the_factory():
    recipe = load_recipe("baseline", ["optimizer.name=sgd", "optimizer.momentum=0.8"])
    assert recipe.config["optimizer"] == {"name": "sgd", "lr": 1e-3, "momentum": 0.8, "nesterov": False,
                                          "weight_decay": 1e-5}


def test_switched_factory_refuses_arguments_it_does_not_take():
    with pytest.raises(UserError, match="scheduler 'none' takes no argument 'step_size'"):
        load_recipe("baseline", ["scheduler.name=none"])


@pytest.mark.parametrize("edit, message", [
    (("[train]", "[trian]"), "unknown key or section 'trian'.*Did you mean 'train'"),
    (("epochs = 1", "epochs = \"one\""), "train.epochs: expected an integer, got 'one'"),
    (("epochs = 1", "epochs = 0"), "train.epochs must be > 0"),
    (("epochs = 1", "epochs = true"), "train.epochs: expected an integer"),
    (("batch_size = 64", "batch_size = -1"), "data.batch_size must be > 0"),
    (("batch_size = 64", "batchsize = 64"), "unknown key 'batchsize' in \\[data\\].*Did you mean 'batch_size'"),
    (('name = "mlp"', 'name = "mpl"'), "unknown model 'mpl'.*Did you mean 'mlp'"),
    (('name = "adam"', 'name = "adma"'), "unknown optimizer 'adma'; known optimizers: .*adam.*"),
    (('device = "cpu"', 'device = "gpu"'), "train.device must be auto, cpu"),
    (("seed = 0", "seed = 0\nloss = \"hinge\""), "unknown loss 'hinge'"),
    (("[data]", "[data]\ndataset = \"cifar\""), "unknown dataset 'cifar'"),
    (("[model]", "[model]\nwidth = 3"), "model 'mlp' takes no argument 'width'"),
])
def test_recipe_mistakes_are_named(tmp_path, edit, message):
    path = write_recipe(tmp_path / "bad.toml", QUICK.replace(*edit, 1))
    with pytest.raises(UserError, match=message):
        load_recipe(path)


def test_toml_syntax_error_names_line_and_column(tmp_path):
    path = write_recipe(tmp_path / "broken.toml", QUICK.replace("limit = 5000", "limit = = 5000"))
    with pytest.raises(UserError, match=r"broken.toml: invalid TOML: .*line \d+, column \d+"):
        load_recipe(path)


def test_unknown_recipe_name_suggests_the_closest():
    with pytest.raises(UserError, match="no recipe 'basline'.*Did you mean 'baseline'"):
        load_recipe("basline")


def test_fallback_must_exist(tmp_path):
    path = write_recipe(tmp_path / "a.toml", QUICK + '[fallback]\nmin_test_accuracy = 0.9\nrecipe = "nothere.toml"\n')
    with pytest.raises(UserError, match="no recipe 'nothere.toml'"):
        load_recipe(path)


def test_fallback_loop_is_refused(tmp_path):
    write_recipe(tmp_path / "a.toml", QUICK + '[fallback]\nmin_test_accuracy = 0.9\nrecipe = "b.toml"\n')
    write_recipe(tmp_path / "b.toml", QUICK + '[fallback]\nmin_test_accuracy = 0.9\nrecipe = "a.toml"\n')
    with pytest.raises(UserError, match="loop back on themselves: a -> b -> a"):
        load_recipe(tmp_path / "a.toml")


def test_fallback_needs_both_keys(tmp_path):
    path = write_recipe(tmp_path / "a.toml", QUICK + "[fallback]\nmin_test_accuracy = 0.9\n")
    with pytest.raises(UserError, match="needs both"):
        load_recipe(path)


PLUGIN = '''
from torch import nn
from mnist_kit.models import MODELS, count_parameters

@MODELS.register("{name}")
def tiny(input_shape, num_classes, width: int = 16):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes))
'''


def test_plugin_from_a_py_path_registers_a_model(tmp_path):
    (tmp_path / "my_models.py").write_text(PLUGIN.format(name="tiny_path"))
    text = 'plugins = ["my_models.py"]\n' + QUICK.replace('name = "mlp"', 'name = "tiny_path"\nwidth = 8')
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", text))
    assert recipe.config["model"] == {"name": "tiny_path", "width": 8}
    assert "tiny_path" in MODELS.names()


def test_plugin_by_module_name(tmp_path, monkeypatch):
    (tmp_path / "lab_models.py").write_text(PLUGIN.format(name="tiny_module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    text = 'plugins = ["lab_models"]\n' + QUICK.replace('name = "mlp"', 'name = "tiny_module"')
    assert load_recipe(write_recipe(tmp_path / "r.toml", text)).config["model"]["name"] == "tiny_module"


def test_plugin_that_does_not_import_is_named(tmp_path):
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    text = 'plugins = ["broken.py"]\n' + QUICK
    with pytest.raises(UserError, match="plugin 'broken.py' does not import: ModuleNotFoundError"):
        load_recipe(write_recipe(tmp_path / "r.toml", text))


def test_a_fallback_that_does_not_build_is_refused_before_anything_trains(tmp_path):
    """Loading resolves the chain; the runner's check builds it: a fallback whose model cannot run on MNIST's images
    stops `train` in seconds, not after the first recipe has trained."""
    too_deep = 'name = "convnet"\nwidths = [8, 8, 8, 8, 8, 8]'  # six halvings of 28 pixels
    write_recipe(tmp_path / "broken.toml", QUICK.replace('name = "mlp"', too_deep))
    path = write_recipe(tmp_path / "main.toml", QUICK + '[fallback]\nmin_test_accuracy = 0.5\nrecipe = "broken.toml"\n')
    recipe = load_recipe(path)  # resolves: every key is known
    with pytest.raises(UserError, match="broken.toml: model 'convnet' fails on a batch of"):
        check_recipe(recipe)
    from mnist_kit.train import train

    with pytest.raises(UserError, match="broken.toml"):
        train(recipe, out_dir=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()
