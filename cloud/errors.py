"""Exceptions of the cloud package. Routes translate them to HTTP errors; nothing else raises HTTPException.

CloudError                  every error carries a stable `code` (default per class; the dashboard
│                           translates codes, never English messages)
├── NotFound                a thing does not exist, or is outside the caller's scope (→ 404)
├── Forbidden               the caller's role may not do this (→ 403)
├── Invalid                 input is well-formed but not acceptable (→ 422 / CLI exit 2)
│   └── GridImportError     a grid CSV row is wrong (carries the line number)
├── Conflict                the request conflicts with current state (→ 409)
├── Unauthenticated         no valid credentials: wrong password, unknown/expired/revoked token (→ 401)
│   └── Locked              too many wrong passwords: the account is locked for a while (→ 423)
├── MigrationError          the database schema cannot be brought up to date
└── DatabaseError           the database itself failed (driver error, lost connection, constraint): nothing
    │                       of the failed transaction was committed — retry, or report
    └── IntegrityViolation  a constraint refused a write (unique, foreign key, check)
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud package raises on purpose.

    `code` is a stable, dotted identifier ("auth.locked") that clients translate; the message is for logs
    and for English-speaking API users."""

    default_code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code


class NotFound(CloudError):
    default_code = "not_found"


class Forbidden(CloudError):
    default_code = "forbidden"


class Invalid(CloudError):
    default_code = "invalid"


class GridImportError(Invalid):
    default_code = "grid.import_row"

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class Conflict(CloudError):
    default_code = "conflict"


class Unauthenticated(CloudError):
    default_code = "auth.invalid_token"


class Locked(Unauthenticated):
    default_code = "auth.locked"


class MigrationError(CloudError):
    default_code = "migration"


class DatabaseError(CloudError):
    default_code = "database"


class IntegrityViolation(DatabaseError):
    default_code = "integrity"
