"""mnist-kit: train, evaluate, explain and ship handwritten-digit classifiers with PyTorch."""

__version__ = "0.2.0"  # 0.2: data in the user's cache, runs/latest, the wheel carries the recipes
