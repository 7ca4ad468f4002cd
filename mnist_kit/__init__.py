"""mnist-kit: train, evaluate, explain and ship handwritten-digit classifiers with PyTorch."""

__version__ = "0.1.0"
