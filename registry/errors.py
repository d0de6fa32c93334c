"""Errors the registry raises; each names the problem in its message."""


class RegistryError(Exception):
    """Base class of every error raised on purpose by the registry."""


class BadInput(RegistryError, ValueError):
    """Input that cannot be stored: malformed file, NaN energy, wrong shape, unknown element..."""


class NotFound(RegistryError, LookupError):
    """A named thing (level, dataset, version, model, alias) does not exist."""


class Conflict(RegistryError):
    """The request contradicts what is stored."""


class DatabaseUnavailable(RegistryError):
    """The database at the configured URL cannot be reached or opened."""


class SchemaOutOfDate(RegistryError):
    """The database schema is missing or older than this code; run `nnp db upgrade`."""
