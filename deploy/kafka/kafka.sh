#!/usr/bin/env bash
# Fetch, start, stop or inspect the local single-node Apache Kafka (KRaft) used for development,
# tests and the demo. Same implementation as `fraudstream kafka up|down|status`.
#   deploy/kafka/kafka.sh up [--port 9092] [--dir .fraudstream/kafka] [--cache .cache/kafka]
#   deploy/kafka/kafka.sh down | status | fetch
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
cd "$root"
exec "$python" -m stream.localkafka "$@"
