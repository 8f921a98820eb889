"""The policy contract: versioned caps per level × audience cohort × signal tier, validated and diffable."""

from freqcap.domain.policy.schema import (
    Cap,
    CapRule,
    Match,
    PenaltyConfig,
    Policy,
    PolicyValidationError,
    dump_policy,
    load_policy,
    parse_policy,
)

__all__ = [
    "Cap",
    "CapRule",
    "Match",
    "PenaltyConfig",
    "Policy",
    "PolicyValidationError",
    "dump_policy",
    "load_policy",
    "parse_policy",
]
