"""`python -m freqcap.cli`: the same as the `freqcap` command."""

import sys

from freqcap.cli.main import main

sys.exit(main())
