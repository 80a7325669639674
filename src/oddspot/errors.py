"""The one exception type users see: a one-line message that names the culprit and the fix."""


class OddspotError(Exception):
    """Bad input or configuration. The CLI prints the message on one line and exits with code 2."""
