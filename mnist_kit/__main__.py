"""`python -m mnist_kit` (and `torchrun -m mnist_kit`) runs the CLI."""

from mnist_kit.cli import main

main()
