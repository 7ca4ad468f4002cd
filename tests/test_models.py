"""The baseline MLP is the reference network: same size, same key names, loads its checkpoints."""

import torch
import torch.nn.functional as F
from torch import nn

from mnist_kit.models import MODELS, count_parameters
from mnist_kit.recipe import load_recipe


class ReferenceNet(nn.Module):
    """The network of the pipeline mnist-kit grew from, written as it was."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.bn1 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, 256)
        self.bn2 = nn.BatchNorm1d(256)
        self.fc3 = nn.Linear(256, 128)
        self.fc4 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        x = x.view(-1, 784)
        x = self.dropout(F.relu(self.bn1(self.fc1(x))))
        x = self.dropout(F.relu(self.bn2(self.fc2(x))))
        x = self.dropout(F.relu(self.fc3(x)))
        return F.log_softmax(self.fc4(x), dim=1)


def baseline_model():
    config = load_recipe("baseline").config
    return MODELS.build(config["model"], input_shape=(1, 28, 28), num_classes=10)


def test_baseline_has_the_reference_size_and_names():
    model = baseline_model()
    assert count_parameters(model) == 568_970
    assert list(model.state_dict()) == list(ReferenceNet().state_dict())


def test_reference_checkpoint_loads_and_computes_the_same():
    torch.manual_seed(1)
    reference = ReferenceNet()
    # give BatchNorm non-trivial running statistics
    reference.train()
    reference(torch.randn(256, 1, 28, 28))
    reference.eval()
    model = baseline_model()
    model.load_state_dict(reference.state_dict(), strict=True)
    model.eval()
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(model(x), reference(x))


def test_mlp_arguments_shape_the_network():
    model = MODELS.build({"name": "mlp", "hidden": [64, 32], "dropout": [0.1, 0.0], "batchnorm": True},
                         input_shape=(1, 28, 28), num_classes=10)
    names = [name for name, _ in model.named_children()]
    assert names == ["flatten", "fc1", "bn1", "relu1", "drop1", "fc2", "bn2", "relu2", "fc3", "log_softmax"]
    assert count_parameters(model) == (784 * 64 + 64) + 2 * 64 + (64 * 32 + 32) + 2 * 32 + (32 * 10 + 10)
