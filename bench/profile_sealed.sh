#!/bin/sh
# Profiles for issue 17 (sealed links against plaintext): TCP events of 64 B and 1 KiB over two
# cores, the TCP command round trip on one core (meshbus turns only), and a series of
# handshakes. Run it in each checkout to compare (the code before issue 17 has no sealed
# buckets; its handshake series dials with `add_peers`, as the one here does).
# Builds with frame pointers into target/fp, records with `perf record -g`, prints the buckets
# of bench/profile_buckets.py. The perf data stays in OUT (default target/profiles17).
#
#   bench/profile_sealed.sh [OUT]
#   perf report -i target/profiles17/ev1024.data --comms ev-sub --no-children   # to dig in
set -eu
cd "$(dirname "$0")/.."
out=${1:-target/profiles17}
mkdir -p "$out"
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_INCREMENTAL=0 \
    cargo build --release -p meshbus-bench --bin wire --target-dir target/fp
wire=target/fp/release/wire
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in 64 1024; do
    perf record -q -F 1999 -g -o "$out/ev$size.data" -- \
        "$wire" --only events --wires tcp --event-placements 2cores --sizes $size --bus-only \
        --rounds 2 --event-secs 3 > "$out/ev$size.md"
done
perf record -q -F 1999 -g -o "$out/rtt.data" -- \
    "$wire" --only rtt --wires tcp --placements 1core --bus-only \
    --rounds 2 --rtt-samples 200000 --rtt-secs 3 --paced 0 > "$out/rtt.md"
perf record -q -F 1999 -g -o "$out/hs.data" -- \
    "$wire" --only handshake --wires tcp --placements 2cores --hs-dials 400 > "$out/hs.md"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in 64 1024; do
    echo "## TCP events $size B, 2cores (publisher CPU 0, subscriber CPU 1)"
    grep '^| tcp' "$out/ev$size.md" || true
    python3 bench/profile_buckets.py "$out/ev$size.data" ev-pub ev-sub --top "${TOP:-0}"
done
echo "## TCP command round trip, 1core, back-to-back"
grep '^| tcp' "$out/rtt.md" || true
python3 bench/profile_buckets.py "$out/rtt.data" rtt-client rtt-server --top "${TOP:-0}"
echo "## Handshakes, 2cores (hottest symbols of each side)"
grep '^| 2cores' "$out/hs.md" || true
for comm in hs-client hs-server; do
    echo "### $comm"
    perf report -i "$out/hs.data" --comms $comm --no-children --sort sym --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | head -n "${HSTOP:-15}"
done
