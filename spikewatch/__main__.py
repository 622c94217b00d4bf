"""``python -m spikewatch``."""

import sys

from spikewatch._entry import main

sys.exit(main())
