"""Store errors, with the table and store they concern."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store failure. `reason` is the plain words a caller sees for it (never a class name)."""

    reason = "store error"

    def __init__(self, message: str, *, store: str = "", table: str = "") -> None:
        super().__init__(message)
        self.store = store
        self.table = table

    def __str__(self) -> str:
        where = "/".join(part for part in (self.store, self.table) if part)
        return f"[{where}] {super().__str__()}" if where else super().__str__()


class StoreUnavailable(StoreError):
    """The store cannot be reached."""

    reason = "store unavailable"


class StoreTimeout(StoreError):
    """A lookup did not finish within its timeout."""

    reason = "store timed out"


class TableNotFound(StoreError):
    """No such table, or no such version of it."""

    reason = "table not found"


class CorruptValue(StoreError):
    """A stored value could not be decoded (bad header, wrong dimension or dtype)."""

    reason = "corrupt value"
