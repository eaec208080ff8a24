"""Errors of the release floor; each message is one line a user can act on."""

from __future__ import annotations


class ReleaseError(Exception):
    """A release that cannot be created, read, verified or routed to."""

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (str(self),))


class ReleaseNotFoundError(ReleaseError):
    """No release of that name in the registry (or not live in the graph)."""


class ReleaseExistsError(ReleaseError):
    """A release of that name exists already; releases are immutable."""


class ArtifactMismatchError(ReleaseError):
    """An artifact of a release is missing or its checksum no longer matches."""


class TrafficError(ReleaseError):
    """Weights, a shadow share, a promote or a rollback that cannot apply."""


class TrafficConflictError(TrafficError):
    """A well-formed change the live state cannot take now (a release not
    warm or retired, nothing to roll back to or restore, a promote of the
    release that takes all traffic): HTTP 409, not 400."""
