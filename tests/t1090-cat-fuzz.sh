#!/bin/bash
# A short libFuzzer run of every harness in tests/fuzz (the record readers,
# the image decoders with preprocessing, safetensors, the model's JSON
# settings, tokenizer.json), after each harness's regression inputs, the
# malformed cases found so far (make fuzz for a longer run). Skipped when
# clang's libFuzzer is missing.
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
for h in msgpack tar image safetensors config tokenizer; do
	# The malformed inputs found so far, each run once: no crash, no leak.
	if [ -d "$FZ/regress/$h" ]; then
		ASAN_OPTIONS=allocator_may_return_null=1 "$FZ/fuzz_$h" -runs=1 -rss_limit_mb=2048 \
			-malloc_limit_mb=2048 "$FZ/regress/$h"/* >"regress-$h.log" 2>&1
		rc=$?
		n=$(ls "$FZ/regress/$h" | wc -l)
		if [ $rc = 0 ]; then ok "fuzz_$h: the $n regression inputs"
		else not_ok "fuzz_$h: a regression input fails (exit $rc)"
			grep -v '^fuzz: ' "regress-$h.log" | tail -40 | diag; fi
	fi
	# A fresh copy of the seeds: runs do not grow the tree's corpus.
	mkdir -p "corpus-$h"
	cp "$FZ/corpus-$h"/* "corpus-$h"/
	ASAN_OPTIONS=allocator_may_return_null=1 \
		"$FZ/fuzz_$h" -max_total_time=3 -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
		-max_len=65536 -artifact_prefix="$TMP/" "corpus-$h" >"fuzz-$h.log" 2>&1
	rc=$?
	if [ $rc = 0 ] && grep -q '^Done [0-9]* runs' "fuzz-$h.log"; then
		ok "fuzz_$h: $(grep -o '^Done [0-9]* runs' "fuzz-$h.log")"
	else
		not_ok "fuzz_$h (exit $rc)"
		grep -v '^fuzz: ' "fuzz-$h.log" | tail -40 | diag
		ls "$TMP"/crash-* 2>/dev/null | diag
	fi
done
done_testing
