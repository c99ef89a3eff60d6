#!/bin/sh
# Profiles of the `wire` program's meshbus roles (issue 14, item 5): TCP events 64 B (2cores)
# and the TCP command round trip (1core, back-to-back), meshbus turns only (`--bus-only`).
# Builds with frame pointers into its own target dir (target/fp), records with
# `perf record -g` (frame-pointer call graphs) and prints the buckets of BENCHMARKS.md's
# "Issue 14: profiles" tables. The perf data stays in OUT (default target/profiles), out of git.
#
#   bench/profile.sh [OUT]
#   perf report -i target/profiles/events.data --comms ev-pub --no-children   # to dig in
set -eu
cd "$(dirname "$0")/.."
out=${1:-target/profiles}
mkdir -p "$out"
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_INCREMENTAL=0 \
    cargo build --release -p meshbus-bench --bin wire --target-dir target/fp
wire=target/fp/release/wire
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
perf record -F 1999 -g -o "$out/events.data" -- \
    "$wire" --only events --wires tcp --event-placements 2cores --sizes 64 --bus-only \
    --rounds 2 --event-secs 3 > "$out/events.md"
perf record -F 1999 -g -o "$out/rtt.data" -- \
    "$wire" --only rtt --wires tcp --placements 1core --bus-only \
    --rounds 2 --rtt-samples 200000 --rtt-secs 3 --paced 0 > "$out/rtt.md"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## TCP events 64 B, 2cores (publisher CPU 0, subscriber CPU 1)"
grep '^| tcp' "$out/events.md" || true
python3 bench/profile_buckets.py "$out/events.data" ev-pub ev-sub --top "${TOP:-0}"
echo "## TCP command round trip, 1core, back-to-back"
grep '^| tcp' "$out/rtt.md" || true
python3 bench/profile_buckets.py "$out/rtt.data" rtt-client rtt-server --top "${TOP:-0}"
