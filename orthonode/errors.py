"""One exception tree for the node. Each boundary maps it: the C-STORE handler to a DICOM status
(PS3.4 Annex B.2.3), the worker to retry-or-fail, the CLI to an exit code."""

from __future__ import annotations


class OrthonodeError(Exception):
    """Base of every error the node raises on purpose."""

    exit_code = 1


class ConfigError(OrthonodeError):
    """The configuration (TOML file, environment) is invalid. Raised at start-up."""

    exit_code = 2


class SchemaOutOfDate(OrthonodeError):
    """The index schema is older than this node: ``orthonode migrate`` brings it up to date."""

    exit_code = 2


class RejectedInstance(OrthonodeError):
    """A received instance the node refuses; carries the C-STORE status to answer with.

    ``quarantine`` says whether the received bytes are kept in the quarantine folder for an operator.
    """

    def __init__(self, status: int, reason: str, *, quarantine: bool) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.quarantine = quarantine


class InvalidUID(OrthonodeError):
    """A string that is not a valid DICOM UID (PS3.5 §9.1) where a UID is required."""


class StorageError(OrthonodeError):
    """The data directory could not take a write (disk full, permissions)."""


class TransientError(OrthonodeError):
    """A failure worth retrying later (peer down, database busy)."""


class PermanentJobError(OrthonodeError):
    """A job that cannot succeed however often it is retried (its files are gone, it is malformed)."""
