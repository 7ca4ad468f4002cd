"""Data sets as in-memory tensors: the dataset registry, normalization, and seeded batch order."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnist_kit.errors import UserError
from mnist_kit.fetch import (  # noqa: F401 (DATA_ENV re-exported)
    DATA_ENV,
    FASHION_FILES,
    MNIST_FILES,
    data_root,
    fetch_fashion_mnist,
    fetch_mnist,
    read_idx,
)
from mnist_kit.registry import Registry

DATASETS = Registry("dataset")
DIGITS = [str(digit) for digit in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is, known before its files are fetched: recipes are checked against it."""

    input_shape: tuple[int, int, int]  # (channels, height, width) of one image as the model sees it
    classes: list[str]
    train_images: int
    test_images: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def describes(input_shape: tuple[int, int, int], classes: list[str], train_images: int, test_images: int):
    """Decorator: a dataset factory states its image shape, classes and split sizes (as `factory.spec`)."""

    def attach(factory):
        factory.spec = DatasetSpec(tuple(input_shape), list(classes), train_images, test_images)
        return factory

    return attach


def dataset_spec(name: str) -> DatasetSpec:
    """The registered data set's spec; a plugin's dataset factory without one is told how to state it."""
    factory = DATASETS.get(name)
    spec = getattr(factory, "spec", None)
    if not isinstance(spec, DatasetSpec):
        raise UserError(f"dataset {name!r} does not state its images: decorate its factory with "
                        f"@mnist_kit.data.describes(input_shape=(1, 28, 28), classes=[...], train_images=N, "
                        f"test_images=M)")
    return spec


@dataclass(frozen=True)
class Splits:
    """A whole data set in memory: uint8 images (N, H, W), int64 labels, and what describes them."""

    name: str
    classes: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: float  # of training pixels scaled to [0, 1]; used to normalize every split
    std: float
    files: dict[str, dict] = field(default_factory=dict)  # file name -> {path, bytes, sha256}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image as the model sees it."""
        return (1, *self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fill(self) -> float:
        """A black pixel (0) once normalized: what augmentation fills the space it uncovers with."""
        return (0.0 - self.mean) / self.std

    @property
    def spec(self) -> DatasetSpec:
        """What these splits are, in the form recipes are checked against."""
        return DatasetSpec(self.input_shape, self.classes, len(self.train_labels), len(self.test_labels))


def file_records(raw_dir: Path, expected: dict[str, tuple[int, str]]) -> dict[str, dict]:
    """{name: {path, bytes, sha256}} of verified files (so their expected size and checksum), for metadata."""
    return {name: {"path": str(raw_dir / name), "bytes": size, "sha256": sha256}
            for name, (size, sha256) in expected.items()}


def tensor(array) -> torch.Tensor:
    """A read-only numpy array as a torch tensor of its own (copied, so torch may write to it)."""
    return torch.from_numpy(array.copy())


@DATASETS.register("mnist")
@describes(input_shape=(1, 28, 28), classes=DIGITS, train_images=60_000, test_images=10_000)
def mnist(root: Path) -> Splits:
    """MNIST: 60,000 training and 10,000 test digits, fetched and verified into root/MNIST/raw."""
    raw = fetch_mnist(root)
    return Splits(
        name="mnist",
        classes=DIGITS,
        train_images=tensor(read_idx(raw / "train-images-idx3-ubyte")),
        train_labels=tensor(read_idx(raw / "train-labels-idx1-ubyte")).long(),
        test_images=tensor(read_idx(raw / "t10k-images-idx3-ubyte")),
        test_labels=tensor(read_idx(raw / "t10k-labels-idx1-ubyte")).long(),
        mean=0.1307,  # the reference pipeline's constants (pixels / 255 over the training set)
        std=0.3081,
        files=file_records(raw, MNIST_FILES),
    )


def pixel_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of uint8 pixels scaled to [0, 1], exact (integer sums, no float drift)."""
    values = images.to(torch.int64)
    count = values.numel()
    total, squares = values.sum().item(), (values * values).sum().item()
    mean = total / count / 255
    return mean, (squares / count / 255**2 - mean**2) ** 0.5


@DATASETS.register("fashion-mnist")
@describes(input_shape=(1, 28, 28), classes=FASHION_CLASSES, train_images=60_000, test_images=10_000)
def fashion_mnist(root: Path) -> Splits:
    """Fashion-MNIST: 28x28 grey clothing images in 10 classes, normalized with its own training statistics."""
    raw = fetch_fashion_mnist(root)
    train_images = tensor(read_idx(raw / "train-images-idx3-ubyte"))
    mean, std = pixel_statistics(train_images)  # 0.2860, 0.3530
    return Splits(
        name="fashion-mnist",
        classes=FASHION_CLASSES,
        train_images=train_images,
        train_labels=tensor(read_idx(raw / "train-labels-idx1-ubyte")).long(),
        test_images=tensor(read_idx(raw / "t10k-images-idx3-ubyte")),
        test_labels=tensor(read_idx(raw / "t10k-labels-idx1-ubyte")).long(),
        mean=mean,
        std=std,
        files=file_records(raw, FASHION_FILES),
    )


def load_dataset(name: str, data_dir: Path | str | None = None) -> Splits:
    """Build the named data set from the registry, fetching it into the data folder if needed."""
    return DATASETS.build(name, root=data_root(data_dir))


def normalize(images: torch.Tensor, mean: float, std: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) on `device`, exactly as torchvision's ToTensor + Normalize."""
    x = images.to(device).unsqueeze(1).to(torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    return x.sub_(mean_t).div_(std_t)


def validation_split(labels: torch.Tensor, count: int, seed: int, num_classes: int) -> tuple[torch.Tensor,
                                                                                        torch.Tensor]:
    """(training, validation) indices into a training split: `count` images held out, the same number of each
    class as far as it divides (the first classes take one more), drawn by `seed` alone so every training seed of a
    recipe sees the same split. Both index lists are in the split's original order."""
    if count == 0:
        return torch.arange(len(labels)), torch.arange(0)
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in range(num_classes):
        members = (labels == label).nonzero().squeeze(1)
        take = count // num_classes + (label < count % num_classes)
        held.append(members[torch.randperm(len(members), generator=generator)[:take]])
    validation = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[validation] = False
    return keep.nonzero().squeeze(1), validation


def batch_order(n: int, batch_size: int, generator: torch.Generator,
                device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Index tensors of one shuffled epoch: a seeded permutation in slices (the last may be short).

    The permutation is drawn on the CPU (the same order on every device) and moved to `device` once per epoch.
    """
    permutation = torch.randperm(n, generator=generator).to(device)
    return iter(permutation.split(batch_size))


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """How many examples of each class."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def data_info(name: str = "mnist", data_dir: Path | str | None = None) -> dict:
    """Where a data set's files are, their sizes and checksums, and the class counts of each split."""
    splits = load_dataset(name, data_dir)
    return {
        "dataset": splits.name,
        "root": str(data_root(data_dir).resolve()),
        "files": splits.files,
        "classes": splits.classes,
        "train": {"images": len(splits.train_labels),
                  "class_counts": class_counts(splits.train_labels, splits.num_classes)},
        "test": {"images": len(splits.test_labels),
                 "class_counts": class_counts(splits.test_labels, splits.num_classes)},
        "mean": splits.mean,
        "std": splits.std,
    }
