"""The one exception type a user's mistake raises; the CLI prints it as one line."""


class VaekitError(Exception):
    """A problem the user can fix (bad flag, bad file, wrong shape); never a bug in vaekit."""
