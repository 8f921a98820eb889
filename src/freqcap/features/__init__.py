"""Batch frequency features: per-tier windowed counts, decayed impressions and user signal tiers."""
