"""The `freqcap` command line (entry point `freqcap.cli:main`)."""

from freqcap.cli.main import main

__all__ = ["main"]
