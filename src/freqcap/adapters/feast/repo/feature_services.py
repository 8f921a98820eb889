"""Feast feature services: the named feature sets that serving and training ask for."""

from __future__ import annotations

from feast import FeatureService, FeatureView

from freqcap.adapters.feast.repo.feature_views import FEATURE_VIEWS


def build_feature_services(views: list[FeatureView]) -> list[FeatureService]:
    by_name = {v.name: v for v in views}
    frequency_views = [by_name["user_advertiser"], by_name["user_campaign"], by_name["user_ad"], by_name["user"]]
    return [
        # What the decision API reads per request: the three frequency tiers and the user's cohort.
        FeatureService(
            name="frequency_serving",
            features=frequency_views,
            description="online frequency state for the decision API",
        ),
        # What the training set joins point-in-time onto each impression.
        FeatureService(
            name="frequency_training",
            features=frequency_views,
            description="frequency features as of just before each impression, for the conversion model",
        ),
    ]


FEATURE_SERVICES = build_feature_services(FEATURE_VIEWS)
