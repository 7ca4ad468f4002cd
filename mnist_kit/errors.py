"""The exceptions the CLI turns into one line: user mistakes (exit status 2) and interruptions (130)."""


class UserError(Exception):
    """A mistake the user can fix (bad recipe, bad path, missing data); never a bug."""


class NoFinishedRun(UserError):
    """`latest` was asked for where no run has finished yet."""

    def __init__(self, link):
        super().__init__(f"no run at {link}: it names the last run that finished in {link.parent}, and none has")
        self.link = link


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; the message says what was kept. `resume_dir`: the run folder whose
    last.pth continues it (None: nothing to resume), trained by `processes` processes."""

    def __init__(self, message: str = "", resume_dir=None, processes: int = 1):
        super().__init__(message)
        self.resume_dir, self.processes = resume_dir, processes


class Unwritten(UserError):
    """A file of a run could not be written (a full disk, a read-only folder); `resume_dir` as for Interrupted."""

    def __init__(self, message: str = "", resume_dir=None, processes: int = 1):
        super().__init__(message)
        self.resume_dir, self.processes = resume_dir, processes


class Notice(UserWarning):
    """Something the user should know that does not stop the command: the CLI prints it as one 'warning:' line."""


class Diverged(Exception):
    """The training loss (or the evaluated model) stopped being a finite number: the run cannot go on."""

    def __init__(self, epoch: int, step: int, lr: float, what: str = "the training loss"):
        super().__init__(f"{what} is not a finite number at epoch {epoch}, step {step} (lr {lr:.3g})")
        self.epoch, self.step, self.lr = epoch, step, lr
