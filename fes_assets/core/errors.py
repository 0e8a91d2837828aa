"""Every error fes_assets raises on purpose: one base, so a caller can catch them all, and a
message that says what to do."""

from __future__ import annotations


class FesError(Exception):
    """Base of the errors fes_assets raises; the message is meant for a person."""


class SettingsError(FesError):
    """A required setting (environment variable) is missing or malformed."""


class RegistryError(FesError, ValueError):
    """The registry file cannot be used; the message names the table and field."""


class IndexSchemaError(FesError):
    """The index in the database cannot be used with this registry or release."""


class QueryError(FesError, ValueError):
    """The arguments do not describe a query; the message says why."""


class BadObjectError(FesError, ValueError):
    """An object cannot be indexed; the message is the reason a person reads in `files`."""


class ObjectChangedError(FesError):
    """An object changed (or vanished) between cataloguing and reading: not a fault of the
    file, so the next run applies its new version."""


class CommandError(FesError):
    """A command-line mistake: one line, exit code 2."""
