"""MLflow: where runs and models live (`uris`), logging a training run and the registry aliases `challenger` /
`champion` (`tracking`), the champion model as monitoring uses it (`champion`), evaluation runs (`evaluation`).
MLflow itself is imported inside the functions (seconds of import time)."""
