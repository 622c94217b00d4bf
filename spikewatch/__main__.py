"""``python -m spikewatch``."""

import sys

from spikewatch.cli import main

sys.exit(main())
