"""The view plan: everything about one feature view that the bulk writer needs, read once from the Feast registry.

The plan names the columns to read from the snapshot (join keys, features, event and created timestamps, through
the batch source's field mapping), the view's name inside the online store, and a fingerprint of everything that
decides the stored layout. A recorded bulk state is trusted only under the same fingerprint, so a schema change,
a Feast upgrade or a change of what this package writes (`LAYOUT_VERSION`) means a full rewrite.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import feast
from feast.value_type import ValueType

from freqcap.adapters.feast.bulk.errors import UnsupportedOnlineStoreError
from freqcap.config import Settings
from freqcap.domain.features import USER_TABLE, serving_columns

# Bumped when what this package writes changes in a way older bulk states must not be trusted across.
LAYOUT_VERSION = 1


@dataclass
class ViewPlan:
    view: Any  # feast.FeatureView
    name: str  # view name in the registry
    store_name: str  # name inside the online store (versioned if Feast's online versioning is on)
    features: list[tuple[str, Any]]  # (name, feast ValueType)
    join_keys: dict[str, Any]  # join key -> ValueType, in Feast's entity_columns order
    ts_field: str
    created_field: str | None
    field_mapping: dict[str, str]
    key_version: int  # Feast's entity_key_serialization_version
    fingerprint: str = ""

    @property
    def key_columns(self) -> list[str]:
        return list(self.join_keys)

    @property
    def feature_names(self) -> list[str]:
        return [f for f, _ in self.features]


def serving_features(settings: Settings) -> dict[str, set[str]]:
    """Per view, the features `decide` reads (freqcap.adapters.feast.fast_reader): what `online_features: serving` keeps."""
    user_cols, tiers = serving_columns(settings.features)
    out = {USER_TABLE: set(user_cols)}
    out.update({cols.view: set(cols.features) for cols in tiers})
    return out


def view_plan(store: Any, target: Any, name: str, only: set[str] | None = None) -> ViewPlan:
    """The plan of view `name` for writing into `target` (a `Target`); `only`: keep just these features."""
    view = store.get_feature_view(name)
    join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
    for key, vtype in join_keys.items():
        if vtype != ValueType.STRING:
            raise UnsupportedOnlineStoreError(f"{name}: join key {key} is {vtype.name}; the bulk path handles STRING")
    source = view.batch_source
    plan = ViewPlan(
        view=view,
        name=name,
        store_name=target.store_name(view),
        # `only`: the online store keeps just these features (feast.online_features: serving); others read as None.
        features=[(f.name, f.dtype.to_value_type()) for f in view.features if only is None or f.name in only],
        join_keys=join_keys,
        ts_field=source.timestamp_field,
        created_field=source.created_timestamp_column or None,
        field_mapping=dict(source.field_mapping or {}),
        key_version=store.config.entity_key_serialization_version,
    )
    spec = {
        "layout": LAYOUT_VERSION,
        "feast": feast.__version__,
        "store": target.kind,
        "project": store.project,
        "view": plan.store_name,
        "features": [(f, t.name) for f, t in plan.features],
        "join_keys": sorted(plan.join_keys),
        "entity_key_serialization_version": plan.key_version,
    }
    plan.fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
    return plan


def source_name(plan: ViewPlan, column: str) -> str:
    """The Parquet column that feeds a view column (inverse of the batch source's field mapping)."""
    for src, dst in plan.field_mapping.items():
        if dst == column:
            return src
    return column
