"""What training shows: rich bars and a growing table on a terminal, plain lines elsewhere."""

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# (history key, column title, format); the validation columns show only where the recipe holds images out
COLUMNS = [("epoch", "epoch", "{}"), ("train_loss", "train loss", "{:.4f}"), ("train_accuracy", "train acc", "{:.2%}"),
           ("val_loss", "val loss", "{:.4f}"), ("val_accuracy", "val acc", "{:.2%}"),
           ("test_loss", "test loss", "{:.4f}"), ("test_accuracy", "test acc", "{:.2%}"), ("lr", "lr", "{:.2e}"),
           ("seconds", "seconds", "{:.1f}")]


def columns(validation: bool) -> list[tuple[str, str, str]]:
    return [column for column in COLUMNS if validation or not column[0].startswith("val_")]


def epoch_cells(row: dict, shown: list[tuple[str, str, str]]) -> list[str]:
    """One history row as formatted table cells."""
    return [fmt.format(row[key]) for key, _, fmt in shown]


class PlainDisplay:
    """One line per epoch: for logs, pipes and --quiet."""

    def __init__(self, console: Console, validation: bool = False):
        self.console, self.shown = console, columns(validation)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, title: str, epochs: int, steps: int) -> None:
        self.console.print(title, highlight=False, soft_wrap=True)

    def batch(self, step: int, loss: float, accuracy: float) -> None:
        pass

    def wants_batch_update(self) -> bool:
        return False

    def epoch(self, row: dict) -> None:
        cells = epoch_cells(row, self.shown)
        self.console.print("  ".join(f"{name} {cell}" for (_, name, _), cell in zip(self.shown, cells)),
                           highlight=False, soft_wrap=True)


class RichDisplay:
    """An epoch bar, a batch bar with live loss and accuracy, and a table row per finished epoch."""

    REFRESH_SECONDS = 0.1

    def __init__(self, console: Console, validation: bool = False):
        self.console, self.shown = console, columns(validation)
        self.table = Table(*(name for _, name, _ in self.shown))
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console)
        self.live = Live(Group(self.table, self.progress), console=console, refresh_per_second=8)
        self.last_update = 0.0

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.remove_task(self.batches)
        return self.live.__exit__(*exc)

    def start(self, title: str, epochs: int, steps: int) -> None:
        self.console.print(title, highlight=False)
        self.epochs = self.progress.add_task("epochs", total=epochs, stats="")
        self.batches = self.progress.add_task("batches", total=steps, stats="")

    def wants_batch_update(self) -> bool:
        now = time.perf_counter()
        if now - self.last_update < self.REFRESH_SECONDS:
            return False
        self.last_update = now
        return True

    def batch(self, step: int, loss: float, accuracy: float) -> None:
        self.progress.update(self.batches, completed=step, stats=f"loss {loss:.4f} acc {accuracy:.2%}")

    def epoch(self, row: dict) -> None:
        self.table.add_row(*epoch_cells(row, self.shown))
        score = (f"val acc {row['val_accuracy']:.2%}" if "val_accuracy" in row
                 else f"test acc {row['test_accuracy']:.2%}")
        self.progress.update(self.epochs, completed=row["epoch"], stats=score)
        self.progress.reset(self.batches, stats="")


def make_display(console: Console, quiet: bool, validation: bool = False) -> PlainDisplay | RichDisplay:
    """Rich bars on an interactive terminal, plain lines when quiet or piped; validation columns where there is a
    validation split."""
    return (PlainDisplay if quiet or not console.is_terminal else RichDisplay)(console, validation)
