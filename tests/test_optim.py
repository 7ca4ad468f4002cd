"""The registered optimizers are torch's, minus the `import torch._dynamo` their methods do on first use (seconds
before a run's first step): same arithmetic and state, bit for bit, and torch._dynamo never imported."""

import subprocess
import sys

import pytest
import torch
from torch import optim

from mnist_kit import optim as ours
from tests.conftest import REPO

PAIRS = [(ours.Adam, optim.Adam, {"lr": 1e-2, "weight_decay": 1e-4, "fused": True}),
         (ours.AdamW, optim.AdamW, {"lr": 1e-2, "weight_decay": 0.05, "fused": True}),
         (ours.SGD, optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "fused": True}),
         (ours.Adadelta, optim.Adadelta, {"lr": 1.0, "weight_decay": 1e-4})]


def trained(kind, settings, steps=5):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    optimizer = kind(model.parameters(), **settings)
    data, target = torch.randn(32, 20), torch.randint(0, 3, (32,))
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data), target).backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("mine, torchs, settings", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_the_same_steps_and_state_as_torchs_own(mine, torchs, settings):
    (model, optimizer), (reference, reference_optimizer) = trained(mine, settings), trained(torchs, settings)
    assert isinstance(optimizer, torchs) and type(optimizer) is not torchs
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    state, expected = optimizer.state_dict(), reference_optimizer.state_dict()
    assert state["param_groups"] == expected["param_groups"]
    assert all(torch.equal(state["state"][i][k], expected["state"][i][k]) for i in expected["state"]
               for k in expected["state"][i])
    again = mine(model.parameters(), **settings)  # a checkpoint's state loads back
    again.load_state_dict(expected)
    assert again.state_dict()["param_groups"] == expected["param_groups"]


def test_building_checking_and_stepping_a_recipe_never_imports_torch_dynamo():
    code = """
import sys
from mnist_kit.assemble import check_recipe
from mnist_kit.recipe import load_recipe
from tests.test_optim import PAIRS, trained
for name in ("fast", "best", "baseline"):
    check_recipe(load_recipe(name))  # builds the optimizer and scheduler, steps once
for mine, _, settings in PAIRS:
    trained(mine, settings)
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # with torch.optim's own classes: True (imported on first use)
