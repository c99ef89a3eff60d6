#!/usr/bin/env bash
# Runs every fuzz target of this directory for SECONDS each (default 60).
# Installs a minimal nightly toolchain and cargo-fuzz first if they are missing.
# Exits non-zero as soon as a target finds a crash (its input is left in fuzz/artifacts/).
#
# Usage: fuzz/run.sh [SECONDS]
set -euo pipefail

secs="${1:-60}"
case "$secs" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

# cargo fuzz looks for fuzz/ under the current directory.
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=$(cargo +nightly fuzz list)
if [ -z "$targets" ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi
for target in $targets; do
  echo "== fuzzing $target for ${secs}s"
  # fuzz/seeds/<target>/ (committed, read only) holds valid inputs the fuzzer would take long
  # to find by itself; new inputs go to fuzz/corpus/<target>/ (not committed).
  corpora=()
  if [ -d "fuzz/seeds/$target" ]; then
    mkdir -p "fuzz/corpus/$target"
    corpora=("fuzz/corpus/$target" "fuzz/seeds/$target")
  fi
  cargo +nightly fuzz run "$target" ${corpora[@]+"${corpora[@]}"} -- -max_total_time="$secs"
done
echo "== no crash in: $(echo $targets)"
