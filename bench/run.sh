#!/usr/bin/env bash
# Runs every benchmark against the test broker and rewrites documentation/BENCHMARKS.md:
#   bench/run.sh            full run (about 17 minutes)
#   bench/run.sh --quick    shorter holds, fewer levels (about 5 minutes, noisier figures)
# Benchmarks are not tests: ./make_test.sh does not run them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${BENCH_OUTPUT:=documentation/BENCHMARKS.md}"

for tool in cargo java mvn; do
  command -v "${tool}" >/dev/null 2>&1 || {
    echo "bench/run.sh: '${tool}' is missing (see README.md, prerequisites)" >&2
    exit 1
  }
done

cargo build --release --locked --workspace

started_broker=false
stop_broker() {
  if [[ "${started_broker}" == true ]]; then
    scripts/kafka-dev.sh stop || true
  fi
}
trap stop_broker EXIT
if ! scripts/kafka-dev.sh status >/dev/null 2>&1; then
  started_broker=true
  scripts/kafka-dev.sh start
fi
eval "$(scripts/kafka-dev.sh env)"

target/release/medicine-bench all --write "${BENCH_OUTPUT}" "$@"
