"""Feast entities: the join keys of freqcap's feature views."""

from feast import Entity
from feast.value_type import ValueType

# The person seeing ads; every feature view is keyed by user, alone or paired with one hierarchy level.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="ad viewer")

# The advertiser level of the hierarchy (longest-lived fatigue).
advertiser = Entity(name="advertiser", join_keys=["advertiser_id"], value_type=ValueType.STRING)

# The campaign level: an advertiser's campaign, grouping ads.
campaign = Entity(name="campaign", join_keys=["campaign_id"], value_type=ValueType.STRING)

# The ad (creative) level: the finest level, with the fastest-recovering fatigue.
ad = Entity(name="ad", join_keys=["ad_id"], value_type=ValueType.STRING)

ENTITIES = [user, advertiser, campaign, ad]
