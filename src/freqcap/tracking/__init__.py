"""MLflow adapter: where runs and models live (`TrackingConfig`), logging a training run, the registry aliases
`challenger` / `champion`, and the champion gate. MLflow itself is imported inside the functions."""

from freqcap.tracking.config import ResolvedTracking, TrackingConfig, resolve_tracking, tracking_config

__all__ = ["ResolvedTracking", "TrackingConfig", "resolve_tracking", "tracking_config"]
