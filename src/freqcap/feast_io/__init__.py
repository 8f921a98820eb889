"""Adapters around Feast: building the store from settings, publishing snapshots, materializing, reading."""
