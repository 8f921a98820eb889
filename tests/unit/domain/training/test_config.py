"""resources/models/conversion.yaml is the reference config; invalid configs fail naming the field."""

from __future__ import annotations

import pytest
import yaml

from freqcap.domain.training.config import (
    ConversionModelConfig,
    ModelConfigError,
    default_model_config_path,
    load_model_config,
)


def test_shipped_yaml_equals_the_defaults_and_is_frozen():
    config = load_model_config()
    assert config == ConversionModelConfig()
    assert config.label.attribution_seconds == 7 * 86400
    with pytest.raises(Exception, match="frozen"):
        config.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"label": {"attribution_window": "7 days"}}, "label.attribution_window"),
        ({"xgboost": {"params": {"tree_method": "exact"}}}, "xgboost.params"),
        ({"data": {"feature_refs": ["user_ad:imp_24h"]}}, "data.feature_refs"),
        ({"data": {"feature_refs": ["user:signal_tier", "user:audience"]}}, "data.feature_refs"),
        ({"split": {"valid_fraction": 0}}, "split.valid_fraction"),
        ({"gate": {"metrics": [{"name": "accuracy"}]}}, "gate.metrics"),
        ({"validation": {"label_rate_min": 0.5, "label_rate_max": 0.1}}, "validation"),
        ({"unknown_section": 1}, "unknown_section"),
        ({"exposure": {"wear_in": None}}, "exposure"),  # monotone needs a wear-in
        ({"exposure": {"wear_in": 0}}, "exposure.wear_in"),
        ({"label": {"target": "click"}}, "label"),  # the default credit deconvolves conversions, not clicks
        ({"gate": {"on_label_change": "ask"}}, "gate.on_label_change"),
    ],
)
def test_invalid_configs_name_the_field(tmp_path, patch, field):
    raw = yaml.safe_load(default_model_config_path().read_text())
    for key, value in patch.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelConfigError, match=field.replace(".", r"\.")):
        load_model_config(path)


def test_digest_changes_with_the_config():
    base = ConversionModelConfig()
    other = base.model_copy(update={"name": "other"})
    assert base.digest() == ConversionModelConfig().digest() != other.digest()
