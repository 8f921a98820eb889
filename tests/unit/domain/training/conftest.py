"""XGBoost's OpenMP threads spin while waiting unless told otherwise, which is ~20x slower on a busy 2-core box
(see freqcap.domain.training.model.passive_openmp); the policy must be set before the runtime loads."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
