"""User-facing errors: one line that names the file, key or option and what was expected."""


class DrorlError(Exception):
    """A mistake in user input (a file, a key, an option). The CLI prints it as one line and exits 2."""
