"""freqcap's exception hierarchy: every failure a job reports on purpose derives from FreqcapError."""


class FreqcapError(Exception):
    """Base class of the errors freqcap raises deliberately, with a message meant for people."""


class FeatureValidationError(FreqcapError):
    """A feature table broke an invariant; the message names each failed check."""
