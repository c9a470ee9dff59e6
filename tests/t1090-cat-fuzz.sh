#!/bin/bash
# A short libFuzzer run of the record readers (tests/fuzz; make fuzz for a
# longer one). Skipped when clang's libFuzzer is missing.
. "$(dirname "$0")/lib.sh"
FZ=$TOP/tests/fuzz
if ! command -v clang >/dev/null ||
   ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
	clang -fsanitize=fuzzer -x c -o fz-probe - 2>/dev/null; then
	echo "ok 1 # skip clang with libFuzzer not installed"
	echo "1..1"
	exit 0
fi
expect "build the harnesses" make -s -C "$FZ" all
for h in msgpack tar; do
	# A fresh copy of the seeds: runs do not grow the tree's corpus.
	mkdir -p "corpus-$h"
	cp "$FZ/corpus-$h"/* "corpus-$h"/
	ASAN_OPTIONS=allocator_may_return_null=1 \
		"$FZ/fuzz_$h" -max_total_time=3 -rss_limit_mb=2048 -timeout=10 \
		-artifact_prefix="$TMP/" "corpus-$h" >"fuzz-$h.log" 2>&1
	rc=$?
	if [ $rc = 0 ] && grep -q '^Done [0-9]* runs' "fuzz-$h.log"; then
		ok "fuzz the $h reader: $(grep -o '^Done [0-9]* runs' "fuzz-$h.log")"
	else
		not_ok "fuzz the $h reader (exit $rc)"
		grep -v '^fuzz: ' "fuzz-$h.log" | tail -40 | diag
		ls "$TMP"/crash-* 2>/dev/null | diag
	fi
done
done_testing
