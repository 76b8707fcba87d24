"""The one exception type of the schema package."""

from __future__ import annotations


class SchemaError(ValueError):
    """A record (or a file of records) breaks the symmetry schema.

    ``str(error)`` is always a single line, ``"<path>: <reason>"`` where a path applies,
    e.g. ``"wyckoff[2]: space group 62 (Pnma) has no Wyckoff position 'h'"``.
    ``error.path`` and ``error.reason`` hold the two parts.
    """

    def __init__(self, message: str, path: str = ""):
        self.reason = " ".join(str(message).splitlines()).strip()
        self.path = path
        super().__init__(f"{path}: {self.reason}" if path else self.reason)

    @property
    def message(self) -> str:
        return self.args[0]

    def within(self, prefix: str) -> SchemaError:
        """The same error located inside ``prefix`` (e.g. ``"[3]"``)."""
        if not self.path:
            path = prefix
        elif self.path.startswith("["):
            path = prefix + self.path
        else:
            path = f"{prefix}.{self.path}"
        return SchemaError(self.reason, path)


def show(value: object, limit: int = 40) -> str:
    """``repr`` of a user-supplied value, shortened so that error messages stay readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type_name(value: object) -> str:
    """JSON name of a Python value's type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
