"""One small hierarchy of typed errors; the CLI maps each to a message and an exit code."""

from __future__ import annotations


class MmsearchError(Exception):
    """Base of every error mmsearch raises on purpose; the message is written for a person."""

    exit_code: int = 1


class ConfigError(MmsearchError):
    """A setting, path or argument the user gave cannot be used."""

    exit_code = 2


class MissingDependencyError(MmsearchError):
    """An optional package is needed for this feature; the message names what to install."""

    exit_code = 3


class ModelError(MmsearchError):
    """A model name cannot be resolved or its weights cannot be loaded."""

    exit_code = 4


class ModelUnavailableError(ModelError):
    """Weights cannot be fetched (offline, no cache) or the download is corrupt."""


class EncoderMismatchError(MmsearchError):
    """A collection was built with one encoder and is being used with another."""

    exit_code = 5


class CatalogError(MmsearchError):
    """The catalog database is missing, from a newer version, or inconsistent."""

    exit_code = 6


class VectorIndexError(MmsearchError):
    """A vector index file is missing, corrupt, or does not match its sidecar."""

    exit_code = 7


class DecodeError(MmsearchError):
    """One input file cannot be decoded; ingestion reports it and goes on."""


class QueryError(MmsearchError):
    """A query cannot be understood or run (empty text, unreadable query image)."""

    exit_code = 2


def require(module: str, feature: str, extra: str):
    """Import an optional module or raise an error that says which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'mmsearch[{extra}]'"
        ) from exc


class InvalidVectorError(MmsearchError):
    """An encoder produced vectors that cannot be stored (NaN, infinity, wrong shape)."""

    exit_code = 7


class DiskFullError(CatalogError):
    """The disk is full: nothing committed is lost, and the run can go on once space is freed."""

    exit_code = 8


class NotFoundError(QueryError):
    """An item or file named by id or path is not in the collection (any more)."""
