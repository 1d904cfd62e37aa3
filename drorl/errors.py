"""User-facing errors: one line that names the file, key or option and what was expected."""


class DrorlError(Exception):
    """A mistake in user input (a file, a key, an option). The CLI prints it as one line and exits 2."""


def brief(value: object, width: int = 60) -> str:
    """``repr(value)`` on one line and at most ``width`` characters, for quoting a bad value in an error."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[:width - 3] + "..."
