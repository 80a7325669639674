"""The one exception type users see: a one-line message that names the culprit and the fix."""


class OddspotError(Exception):
    """Bad input or configuration. The CLI prints the message on one line and exits with code 2."""


def safe_text(text: str) -> str:
    """`text` with no lone surrogate: the bytes of a file name that is not UTF-8 are escaped (`\\xff`).

    Python reads such a name (`b"\\xff.png"`) as a str holding a lone surrogate, which no UTF-8
    file can hold; every path written to a CSV or JSON file goes through this first.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
