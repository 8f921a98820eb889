"""freqcap: personalized ad frequency capping."""

__version__ = "0.1.0"
