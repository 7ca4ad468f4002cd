"""The one exception type for user mistakes: the CLI turns it into one line and exit status 2."""


class UserError(Exception):
    """A mistake the user can fix (bad recipe, bad path, missing data); never a bug."""
