"""`mnist-kit export RUN --format hf --out DIR`: a folder the Hugging Face Hub takes as a model repository.

model.safetensors (the run's, byte for byte), config.json (the architecture, recipe, preprocessing and classes:
everything opening a run reads, so `mnist-kit eval DIR` and `predict DIR image.png` work on the folder), and a
README.md model card written with huggingface_hub's ModelCard/ModelCardData: YAML header (license, datasets, tags,
metrics as model-index), intended use, the recipe, and limits measured on the test split when the folder is
written (per class, and under shifts, rotations and inverted colours). Nothing here uses the network; uploading is
`hf upload USER/NAME DIR`.
"""

from pathlib import Path

from mnist_kit.atomic import write_bytes_atomic, write_json_atomic
from mnist_kit.errors import UserError
from mnist_kit.invocation import install_hint
from mnist_kit.record import LAST, METADATA, PTH

CONFIG = "config.json"
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
CONFIG_KEYS = ("schema", "recipe", "recipe_hash", "seed", "parameters", "input_shape", "classes", "data", "machine",
               "precision", "test_accuracy", "test_loss", "per_class_accuracy", "validation_accuracy", "kept_epoch",
               "versions", "git_commit", "started", "wall_seconds", "calibration",
               "verdict")


def hub_config(metadata: dict, recipe, weights_sha256: str) -> dict:
    """config.json: what the Hub and other tools read first (model_type, labels, preprocessing), then the run's
    metadata that opening it needs (the recipe in today's form), with the SHA-256 of the folder's model.safetensors."""
    from mnist_kit.recipe import recipe_to_dict
    from mnist_kit.record import SCHEMA_VERSION

    classes, data = metadata["classes"], metadata["data"]
    return {"model_type": "mnist-kit", "architecture": recipe.config["model"]["name"],
            "num_labels": len(classes), "id2label": dict(enumerate(classes)),
            "label2id": {c: i for i, c in enumerate(classes)},
            "preprocessing": {"input_shape": metadata["input_shape"], "mean": data["mean"], "std": data["std"],
                              "steps": "grey, white ink on black, ink centred in 20x20 inside 28x28 by its centre of "
                                       "mass (as MNIST), pixel / 255, then (x - mean) / std"},
            **{k: metadata[k] for k in CONFIG_KEYS if k in metadata}, "schema": SCHEMA_VERSION,
            "recipe": recipe_to_dict(recipe), "weights": {"model.safetensors": weights_sha256}}


def card_limits(measured: dict) -> list[tuple[str, float]]:
    """The model card's table rows from mnist_kit.robustness: the clean test split, each corruption, the mean."""
    return [("the test split as it is (float32; the run's own figure used its training precision)", measured["clean"]),
            *((f"{name} (MNIST-C-style, generated here)", value) for name, value in measured["corruptions"].items()),
            ("mean over the corruptions", measured["mean"])]


def package_license() -> str:
    """mnist-kit's license as the Hub spells it ("mit"): from the installed package's metadata (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return (metadata("mnist-kit").get("License-Expression") or "unknown").lower()
    except PackageNotFoundError:
        return "unknown"


def model_card(metadata: dict, recipe, name: str, limits: list[tuple[str, float]]):
    """The model card: huggingface_hub's ModelCardData for the YAML header, then the text."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from mnist_kit.recipe import to_toml

    data, dataset = metadata["data"], metadata["data"]["dataset"]
    hub_dataset = HUB_DATASETS.get(dataset, dataset)
    card_data = ModelCardData(
        license=package_license(), library_name="pytorch", datasets=[hub_dataset], metrics=["accuracy"],
        model_name=name,
        tags=["image-classification", dataset, "mnist-kit", "safetensors"], pipeline_tag="image-classification",
        eval_results=[EvalResult(task_type="image-classification", dataset_type=hub_dataset, dataset_name=dataset,
                                 dataset_split="test", metric_type="accuracy",
                                 metric_value=metadata["test_accuracy"])])
    per_class = "\n".join(f"| {c} | {a:.2%} |" for c, a in (metadata.get("per_class_accuracy") or {}).items())
    measured = "\n".join(f"| {what} | {value:.2%} |" for what, value in limits)
    recipe_text = to_toml(recipe.config)
    text = f"""---
{card_data.to_yaml()}
---

# {name}

A {recipe.config["model"]["name"]} handwritten-{"digit" if dataset == "mnist" else "image"} \
classifier ({metadata.get("parameters", 0):,} parameters) trained with mnist-kit from its \
`{recipe.name}` recipe on the {data.get("train_images", 0):,} training images of {dataset}; \
{metadata["test_accuracy"]:.2%} on its {data.get("test_images", 0):,} test images.

## Intended use

Classifying single {dataset} images: 28x28 grey, one centred character, white on black. Teaching and trying
things out; not for reading real documents (addresses, cheques, forms), which need a model trained and measured
on such documents.

## How to use it

Preprocess as the model was trained: {", ".join(f"{k} {v}" for k, v in (("mean", data["mean"]), ("std", data["std"])))}
(`config.json` → `preprocessing`). With mnist-kit: `mnist-kit predict THIS_FOLDER image.png` (any photo or scan
of one character: it is made MNIST-like first), `mnist-kit eval THIS_FOLDER`. The weights are plain
`model.safetensors`; the architecture is the recipe below, built by mnist-kit's model registry.

## Limits, measured

Test accuracy per class:

| class | accuracy |
| --- | --- |
{per_class}

Test accuracy when the test images differ from the training images (measured when this folder was written, on
MNIST-C-style corruptions generated by mnist-kit in the spirit of Mu and Gilmer 2019, not the published files):

| test images | accuracy |
| --- | --- |
{measured}

## Training

Recipe `{recipe.name}`, seed {metadata.get("seed")}, {metadata.get("wall_seconds", 0):.0f} s on \
{(metadata.get("machine") or {}).get("cpu") or "?"} (torch {(metadata.get("versions") or {}).get("torch")}):

```toml
{recipe_text}```
"""
    return ModelCard(text)


def check_out_folder(out: Path, force: bool) -> None:
    """The Hub folder goes into a new or empty folder; into one that holds files only with `force` (its
    model.safetensors, config.json and README.md are replaced), and never into a run folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: a file, not a folder")
    if any((out / name).exists() for name in (METADATA, LAST, PTH)):
        raise UserError(f"--out {out} is a run folder: its weights would be replaced; give the Hub folder its own")
    held = sorted(path.name for path in out.iterdir())
    if held and not force:
        raise UserError(f"--out {out} is not empty ({', '.join(held[:3])}{', ...' * (len(held) > 3)}): give a new "
                        f"or empty folder, or --force to replace its model.safetensors, config.json and README.md")


def save_hub_folder(run_path: Path | str, out: Path | str, data_dir: Path | str | None = None,
                    force: bool = False) -> Path:
    """Write the Hub folder for a run into `out`: a new or empty folder (with `force`, one that holds files: those
    it writes are replaced atomically), never a run folder."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise UserError(f"--format hf needs huggingface_hub: {install_hint('hub')}") from None
    import hashlib

    from mnist_kit.inference import open_run
    from mnist_kit.robustness import robustness
    from mnist_kit.runs import run_dataset

    out = Path(out)
    check_out_folder(out, force)
    predictor = open_run(run_path)
    run, model, used = predictor.run, predictor.scores, predictor.weights
    try:
        out.mkdir(parents=True, exist_ok=True)
        if used.suffix == ".safetensors":
            blob = used.read_bytes()
        else:  # a run with only model.pth: its tensors as safetensors
            from mnist_kit.export import cpu_state_dict, safetensors_bytes

            blob = safetensors_bytes(cpu_state_dict(model), {})
        write_bytes_atomic(out / "model.safetensors", blob)
        write_json_atomic(out / CONFIG, hub_config(run.metadata, run.recipe, hashlib.sha256(blob).hexdigest()))
        card = model_card(run.metadata, run.recipe, out.resolve().name,
                          card_limits(robustness(predictor, run_dataset(run, data_dir))))
        write_bytes_atomic(out / "README.md", str(card).encode())
    except OSError as error:
        raise UserError(f"cannot write into {out}: {error.strerror or error}") from None
    return out

