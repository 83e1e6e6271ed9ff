"""Exceptions of the cloud package. Routes translate them to HTTP errors; nothing else raises HTTPException.

CloudError
├── NotFound            a thing does not exist, or is outside the caller's scope (→ 404)
├── Forbidden           the caller's role may not do this (→ 403)
├── Invalid             input is well-formed but not acceptable (→ 422 / CLI exit 2)
│   └── GridImportError a grid CSV row is wrong (carries the line number)
├── Conflict            the request conflicts with current state (→ 409)
└── MigrationError      the database schema cannot be brought up to date
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud package raises on purpose."""


class NotFound(CloudError):
    pass


class Forbidden(CloudError):
    pass


class Invalid(CloudError):
    pass


class GridImportError(Invalid):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class Conflict(CloudError):
    pass


class MigrationError(CloudError):
    pass
