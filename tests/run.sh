#!/usr/bin/env bash
# The whole test suite, from a fresh machine: prepare the testbed, check formatting and lints,
# then run every test (unit, and end-to-end against the real Docker engine and Git servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --no-fail-fast
# The benchmark harness on a small size, so it cannot rot.
python3 benches/bench.py --quick
# Conformance against real compose files written by others, when the corpus is beside the repo.
if [ -d ../shared/corpus/compose ]; then
  cargo test --test corpus -- --include-ignored
else
  echo "SKIPPED: corpus conformance (../shared/corpus not found beside the repository)"
fi
