"""What training shows: rich bars and a growing table on a terminal, plain lines elsewhere."""

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

COLUMNS = [("epoch", "{}"), ("train loss", "{:.4f}"), ("train acc", "{:.2%}"), ("test loss", "{:.4f}"),
           ("test acc", "{:.2%}"), ("lr", "{:.2e}"), ("seconds", "{:.1f}")]
KEYS = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"]


def epoch_cells(row: dict) -> list[str]:
    """One history row as formatted table cells."""
    return [fmt.format(row[key]) for (_, fmt), key in zip(COLUMNS, KEYS)]


class PlainDisplay:
    """One line per epoch: for logs, pipes and --quiet."""

    def __init__(self, console: Console):
        self.console = console

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
        cells = epoch_cells(row)
        self.console.print("  ".join(f"{name} {cell}" for (name, _), cell in zip(COLUMNS, cells)), highlight=False,
                           soft_wrap=True)


class RichDisplay:
    """An epoch bar, a batch bar with live loss and accuracy, and a table row per finished epoch."""

    REFRESH_SECONDS = 0.1

    def __init__(self, console: Console):
        self.console = console
        self.table = Table(*(name for name, _ in COLUMNS))
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
        self.table.add_row(*epoch_cells(row))
        self.progress.update(self.epochs, completed=row["epoch"], stats=f"test acc {row['test_accuracy']:.2%}")
        self.progress.reset(self.batches, stats="")


def make_display(console: Console, quiet: bool) -> PlainDisplay | RichDisplay:
    """Rich bars on an interactive terminal, plain lines when quiet or piped."""
    return PlainDisplay(console) if quiet or not console.is_terminal else RichDisplay(console)
