#!/bin/bash
# bench.sh — make bench: runs every tests/bench/*.sh in order. Each prints
# its figures beside the peer's (../shared/bench) measured in the same run,
# with the ratio. Benchmarks are not tests: nothing here fails on a timing.
cd "$(dirname "$0")/.." || exit 1
export PATH="$PWD/bin:$PATH"
export SEVA_SHARED="${SEVA_SHARED:-$(cd .. && pwd)/shared}"
for b in tests/bench/*.sh; do
	[ -e "$b" ] || continue
	echo "== $(basename "$b" .sh)"
	bash "$b" || echo "(benchmark $b failed with exit $?)"
done
