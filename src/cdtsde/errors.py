"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""


class CdtsdeError(Exception):
    """An error caused by the user's input: a bad file, argument or configuration."""


class ImageReadError(CdtsdeError, ValueError):
    """A file could not be read as an image; the message names the file and the reason."""
