"""A file registry store whose writes are atomic, plugged in through Feast's `registry_store_type`.

Feast 0.67's FileRegistryStore rewrites registry.db in place (`open(path, "wb")` truncates first), so a reader
refreshing at that moment parses an empty registry and raises FeatureViewNotFoundException — seen here when a
serving process refreshed during a materialization. Writing a temporary file and renaming it over the old one
makes every reader see either the old or the new registry, never a partial one.
"""

from __future__ import annotations

import os
import tempfile
import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.utils import _utc_now


class AtomicFileRegistryStore(FileRegistryStore):
    """FileRegistryStore with write-to-temp-then-rename updates."""

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        directory = self._filepath.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".registry-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(registry_proto.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._filepath)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
