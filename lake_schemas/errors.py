"""Errors of the lake contract, each with a message that says what the caller must change."""

from __future__ import annotations


class LakeError(Exception):
    """Base class of every error the lake raises on purpose."""


class SchemaMismatch(LakeError, ValueError):
    """A batch does not match its table's spec; nothing was written.

    ``problems`` maps each offending column to what is wrong with it (missing, unexpected,
    wrong type, nulls in a NOT NULL column), so a caller can log or test it precisely.
    """

    def __init__(self, table: str, problems: dict[str, str]) -> None:
        self.table = table
        self.problems = dict(problems)
        detail = "; ".join(f"{column}: {why}" for column, why in sorted(self.problems.items()))
        super().__init__(
            f"batch for {table} does not match its schema, nothing was written ({detail})"
        )

    @property
    def columns(self) -> list[str]:
        """The offending column names, sorted."""
        return sorted(self.problems)


class VersionNotFound(LakeError, LookupError):
    """Time travel asked for a version or a time the table does not have."""


class TableNotFound(LakeError, LookupError):
    """An operation needs a table that has never been written."""


class NotReadOnly(LakeError, ValueError):
    """Analyst SQL that is not exactly one read statement (nothing was run)."""
