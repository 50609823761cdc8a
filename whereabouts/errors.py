"""The one exception hierarchy of the plugin, each class carrying its CNI error code.

Code below the CNI boundary raises these; only `whereabouts.plugin.cni` turns them into
output, so the code a user sees for a failure is decided here and nowhere else.
"""

from __future__ import annotations


class CNIError(Exception):
    """A failure that the runtime sees as a CNI error result."""

    code = 999

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class IncompatibleVersion(CNIError):
    code = 1


class InvalidEnvironment(CNIError):
    code = 4


class IOFailure(CNIError):
    """The store answered, but not with what we need (permission denied, bad request)."""

    code = 5


class DecodeFailure(CNIError):
    code = 6


class InvalidConfig(CNIError):
    code = 7


class TryAgainLater(CNIError):
    """Transient: the API server is unreachable or the lock was not obtained in time."""

    code = 11


class OutcomeUnknown(TryAgainLater):
    """A write was sent but its answer was lost (timeout, reset, closed connection).

    It may or may not have been applied: the caller must read the object again before
    deciding anything, and must never simply send the same write again.
    """


class NotAvailable(CNIError):
    """STATUS: an ADD could not be served now."""

    code = 50


class RangeExhausted(CNIError):
    """Plugin-specific: no free address is left in a range."""

    code = 100


class AddressUnavailable(CNIError):
    """Plugin-specific: a requested static address is held by another owner."""

    code = 101


class CorruptPool(CNIError):
    """Plugin-specific: a stored IPPool cannot be read safely, so it is left untouched."""

    code = 102


class NotAllocated(CNIError):
    """Plugin-specific (CHECK): the address in prevResult is not allocated to this container."""

    code = 103
