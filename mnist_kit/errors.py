"""The exceptions the CLI turns into one line: user mistakes (exit status 2) and interruptions (130)."""


class UserError(Exception):
    """A mistake the user can fix (bad recipe, bad path, missing data); never a bug."""


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; the message says what was kept and how to resume."""
