"""``python -m bench`` (what ``make bench`` runs): the peer comparison in ``bench/harness.py``."""

import sys

from bench.harness import main

sys.exit(main())
