"""One-line error messages, shared by every command line (imports nothing heavy).

Bad input ends a command with ``error: <one line>`` and a non-zero exit, never a traceback:
the first line of the exception's message is what the user sees.
"""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(exc: BaseException | str) -> str:
    """The first line of an error's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
