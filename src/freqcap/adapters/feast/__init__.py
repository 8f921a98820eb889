"""Feast: the runtime repo built from settings (`store`, definitions in `repo/`), snapshots with tombstones,
the online store's layout and bulk writes, the serving readers, and the stream push."""
