"""Entry point for ``python -m stream.localkafka`` (used by deploy/kafka/kafka.sh)."""

import sys

from stream.localkafka import main

sys.exit(main())
