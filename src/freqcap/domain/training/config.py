"""The conversion model's configuration (`resources/models/conversion.yaml`), validated into frozen
pydantic models.

Every section has defaults equal to the shipped YAML, so `ConversionModelConfig()` is the reference model.
Unknown keys are rejected (a typo in the YAML fails loudly, naming the field).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from freqcap.config import parse_duration
from freqcap.domain.events import LEVELS
from freqcap.errors import FreqcapError
from freqcap.resources import model_config_path


class ModelConfigError(FreqcapError):
    """The model configuration file is missing or invalid; the message names the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class LabelConfig(_Frozen):
    """What the model predicts.

    `label_conversion` = 1 when the same user has a conversion attributed to this impression's ad within
    `attribution_window` at or after the impression; `label_click` likewise with `click_window`;
    `label_attributed_conversion` = 1 when that conversion also comes before the next impression of the same ad
    (this impression is the ad's last touch: the conversion is attributed to *it*, not to a later one).
    """

    target: Literal["conversion", "attributed_conversion", "click"] = "attributed_conversion"
    # What the booster fits on the training rows: the curves' EM credit of each impression (fractional,
    # `freqcap.domain.training.credit`; its exposure response is the published curves') or the binary `target`
    # (`last_touch`); metrics and the gate always use `target`.
    credit: Literal["last_touch", "deconvolved"] = "deconvolved"
    attribution_window: str = "7d"
    click_window: str = "1h"

    @model_validator(mode="after")
    def _credit_of_conversions(self) -> LabelConfig:
        if self.credit == "deconvolved" and self.target == "click":
            raise ValueError(
                "label.credit: deconvolved credits conversions; with label.target: click set label.credit: last_touch"
            )
        return self

    @field_validator("attribution_window", "click_window")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    @property
    def target_column(self) -> str:
        return f"label_{self.target}"

    @property
    def attribution_seconds(self) -> int:
        return int(parse_duration(self.attribution_window).total_seconds())

    @property
    def click_seconds(self) -> int:
        return int(parse_duration(self.click_window).total_seconds())

    @property
    def horizon_seconds(self) -> int:
        """How long after an impression its labels need observed events."""
        return max(self.attribution_seconds, self.click_seconds)


DEFAULT_FEATURE_REFS: tuple[str, ...] = (
    "user_advertiser:imp_24h",
    "user_advertiser:imp_7d",
    "user_advertiser:imp_28d",
    "user_advertiser:clk_28d",
    "user_advertiser:conv_28d",
    "user_advertiser:imp_decayed",
    "user_campaign:imp_24h",
    "user_campaign:imp_7d",
    "user_campaign:imp_28d",
    "user_campaign:clk_28d",
    "user_campaign:conv_28d",
    "user_campaign:imp_decayed",
    "user_ad:imp_24h",
    "user_ad:imp_7d",
    "user_ad:imp_28d",
    "user_ad:clk_28d",
    "user_ad:conv_28d",
    "user_ad:imp_decayed",
    "user:signal_tier",
    "user:imp_24h",
    "user:imp_7d",
    "user:clk_28d",
    "user:conv_28d",
)


class DataConfig(_Frozen):
    """How the training set is assembled.

    `feature_refs` are Feast references (`view:feature`), joined point-in-time as of just before each
    impression; `user:signal_tier` is required (it is a context feature and half of the cohort).
    `exposure_lookback` bounds the exact exposure index n and the hours since the last impression.
    `window` is how far back from the end of the data window impressions are taken; `history_warmup` skips the
    first span of the events, whose impressions would have no history.
    """

    feature_refs: tuple[str, ...] = DEFAULT_FEATURE_REFS
    exposure_lookback: str = "28d"
    window: str = "28d"
    history_warmup: str = "1d"
    deduplicate: bool = True
    # Every impression must have a feature snapshot within the Feast views' ttl before it (else: stop).
    require_snapshot_coverage: bool = True
    # Entity rows per get_historical_features call (bounds Feast's memory: ~1.2 GB peak RSS per million rows).
    feast_chunk_rows: int = Field(1_000_000, gt=0)

    @field_validator("exposure_lookback", "window", "history_warmup")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    @field_validator("feature_refs")
    @classmethod
    def _refs(cls, refs: tuple[str, ...]) -> tuple[str, ...]:
        for ref in refs:
            view, _, feature = ref.partition(":")
            if not view or not feature:
                raise ValueError(f"feature ref {ref!r} must look like 'view:feature'")
            if ref == "user:audience":
                raise ValueError("user:audience: the audience comes from users.parquet (a static attribute), not Feast")
            if feature == "last_imp_ts":
                raise ValueError(f"{ref}: timestamps are not model features (hours_since_last_* are computed exactly)")
        if "user:signal_tier" not in refs:
            raise ValueError("feature_refs must include 'user:signal_tier' (context and cohort)")
        if len(set(refs)) != len(refs):
            raise ValueError("feature_refs has duplicates")
        return refs

    @property
    def lookback_seconds(self) -> int:
        return int(parse_duration(self.exposure_lookback).total_seconds())


class SplitConfig(_Frozen):
    """Time-based split: the latest `valid_fraction` of impressions (by time) validate; the latest
    `early_stopping_fraction` of the training part decides when boosting stops. `gap` drops impressions just
    before each cut (set it to the attribution window to keep training labels from seeing validation time)."""

    valid_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    # 0: no early stopping (the default: it stopped before the count response was learnt, see
    # docs/concepts/training.md); boosting runs `xgboost.num_boost_round` rounds on every row before validation
    early_stopping_fraction: float = Field(0.0, ge=0.0, lt=0.5)
    gap: str = "0s"

    @field_validator("gap")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    @property
    def gap_seconds(self) -> int:
        return int(parse_duration(self.gap).total_seconds())


class XGBoostConfig(_Frozen):
    """Booster parameters (passed to `xgb.train` as given; `tree_method` must be `hist`)."""

    params: dict[str, Any] = Field(
        default_factory=lambda: {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "auc"],
            "tree_method": "hist",
            "max_depth": 6,
            "eta": 0.1,
            "min_child_weight": 5.0,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "max_bin": 256,
            "nthread": 2,
            "seed": 7,
        }
    )
    num_boost_round: int = Field(100, gt=0)
    early_stopping_rounds: int | None = Field(30, gt=0)

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("tree_method", "hist") != "hist":
            raise ValueError("tree_method must be 'hist'")
        if params.get("objective", "binary:logistic") != "binary:logistic":
            raise ValueError("objective must be 'binary:logistic' (the model predicts a probability)")
        return {"objective": "binary:logistic", "tree_method": "hist", **params}


class ExposureConfig(_Frozen):
    """How the model sees exposure, so that its response to the count can be read off it.

    `wear_in`: each exposure index n_L enters as min(n_L, wear_in) (free: the response may rise during the
    wear-in) and max(n_L − wear_in, 0), on which `monotone: true` puts an XGBoost monotone-decreasing constraint
    (more exposures beyond the wear-in never raise the prediction). `pair_counts: false` leaves the pair-level
    impression counts (imp_24h/7d/28d, imp_decayed of the advertiser, campaign and ad views) out of the model:
    they duplicate n_L (count) and hours_since_last_L (recency) and absorbed the count's effect.
    """

    wear_in: int | None = Field(2, ge=1)
    monotone: bool = True
    pair_counts: bool = False

    @model_validator(mode="after")
    def _needs_wear_in(self) -> ExposureConfig:
        if self.monotone and self.wear_in is None:
            raise ValueError("monotone needs a wear_in (the response may rise before it)")
        return self


class CurveConfig(_Frozen):
    """The model-based exposure curve (`freqcap.domain.training.curve`): implied rate and partial dependence on n."""

    max_n: int = Field(20, ge=2)
    levels: tuple[Literal["advertiser", "campaign", "ad"], ...] = LEVELS  # type: ignore[assignment]
    # Rows per cohort the dependence averages over (a deterministic sample of the validation rows).
    sample_rows: int = Field(2000, gt=0)
    min_cohort_rows: int = Field(50, gt=0)


class GateMetric(_Frozen):
    """A challenger passes a metric when it is no worse than the champion by more than `tolerance`."""

    name: Literal["roc_auc", "pr_auc", "log_loss", "ece"]
    tolerance: float = Field(0.0, ge=0.0)

    @property
    def higher_is_better(self) -> bool:
        return self.name in ("roc_auc", "pr_auc")


class GateConfig(_Frozen):
    """Champion gate: every metric must pass. With `head_to_head`, both models are scored on the challenger's
    validation rows that are also out of sample for the champion (at or after the champion's validation cut);
    when there are too few of those, or the champion cannot read them, the logged validation metrics are
    compared instead (the decision says which)."""

    metrics: tuple[GateMetric, ...] = (
        GateMetric(name="roc_auc", tolerance=0.002),
        GateMetric(name="log_loss", tolerance=0.0005),
    )
    # A challenger fitted on another label than the champion's (`label.target` or `label.credit`, as logged on
    # the runs; runs without `label.credit` fitted the binary target): both still get scored, but the binary
    # metrics rank different targets (a model of which impression *caused* a conversion ranks the last touch
    # less well), so they do not decide. `promote`: the configured label takes over (the change of the
    # model's configuration is the decision); `refuse`: the champion stays until a person promotes.
    on_label_change: Literal["promote", "refuse"] = "promote"
    head_to_head: bool = True
    # Head-to-head needs this many positive validation rows that the champion never trained on.
    min_head_to_head_positives: int = Field(30, ge=1)

    @field_validator("metrics")
    @classmethod
    def _some(cls, metrics: tuple[GateMetric, ...]) -> tuple[GateMetric, ...]:
        if not metrics:
            raise ValueError("the gate needs at least one metric")
        return metrics


class ValidationConfig(_Frozen):
    """The Great Expectations suite the training set must pass before training, and its parameters. `suite` is a
    file (absolute, or relative to the working directory) or the name of a packaged suite (`training.json`)."""

    suite: str = "training.json"
    min_rows: int = Field(1000, ge=1)
    label_rate_min: float = Field(0.001, ge=0.0, le=1.0)
    label_rate_max: float = Field(0.3, ge=0.0, le=1.0)
    max_exposure: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _band(self) -> ValidationConfig:
        if self.label_rate_min >= self.label_rate_max:
            raise ValueError("label_rate_min must be below label_rate_max")
        return self


class ConversionModelConfig(_Frozen):
    name: str = "conversion"
    registered_model: str = "freqcap-conversion"
    experiment: str = "freqcap-conversion"
    label: LabelConfig = LabelConfig()
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    xgboost: XGBoostConfig = XGBoostConfig()
    exposure: ExposureConfig = ExposureConfig()
    curve: CurveConfig = CurveConfig()
    gate: GateConfig = GateConfig()
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ConversionModelConfig:
        if not self.registered_model.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("registered_model may contain letters, digits, '-', '_' and '.' only")
        return self

    def digest(self) -> str:
        """A short, stable hash of the configuration (logged with every run)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_model_config_path() -> Path:
    """The reference model config shipped in the package (`freqcap.resources`)."""
    return model_config_path()


def load_model_config(path: str | Path | None = None) -> ConversionModelConfig:
    """Read and validate a model YAML (default: the packaged `resources/models/conversion.yaml`)."""
    path = Path(path) if path is not None else default_model_config_path()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelConfigError(f"cannot read model config {path}: {exc}") from exc
    try:
        return ConversionModelConfig.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ModelConfigError(f"invalid model config {path}: {fields}") from exc


def resolve_model_config(config: ConversionModelConfig | str | Path | None) -> ConversionModelConfig:
    """A config object as given, or loaded from a path (None: the default file)."""
    if isinstance(config, ConversionModelConfig):
        return config
    return load_model_config(config)
