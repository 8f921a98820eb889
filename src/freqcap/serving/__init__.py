"""The decision API (`POST /v1/decide`): Feast online features + the hot-reloadable policy, failing open."""

from freqcap.serving.app import create_app
from freqcap.serving.reader import FeastReader, FeatureReader, UserState

__all__ = ["FeastReader", "FeatureReader", "UserState", "create_app"]
