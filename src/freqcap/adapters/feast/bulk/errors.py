"""What can go wrong in a bulk write, as exceptions callers can tell apart."""

from __future__ import annotations

from freqcap.adapters.feast.online_format import FormatMismatch


class BulkMaterializeError(RuntimeError):
    """The online store rejected a write, or the input cannot be written by this path."""


class LayoutMismatchError(BulkMaterializeError, FormatMismatch):
    """Bytes encoded here differ from what Feast's own write path would store: nothing of that batch was written."""


class StaleSnapshotError(BulkMaterializeError):
    """The online store already holds a newer snapshot of the view than the one given."""


class UnsupportedOnlineStoreError(BulkMaterializeError):
    """The online store (or a feature/entity type) is not handled by the bulk path; use `store.materialize`."""
