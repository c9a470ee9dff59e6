#!/bin/bash
# run.sh — the test command (make test): every C unit test (tests/bin/test_*)
# and shell test (tests/t*.sh), TAP; prints failing checks and one closing
# line "N passed, N failed" counting individual checks.
cd "$(dirname "$0")/.." || exit 1
pass=0 fail=0 broken=0
log=$(mktemp)
for t in tests/bin/test_* tests/t[0-9]*.sh; do
	[ -e "$t" ] || continue
	start=$(date +%s)
	if [ "${t%.sh}" != "$t" ]; then bash "$t" >"$log" 2>&1; else "$t" >"$log" 2>&1; fi
	rc=$?
	p=$(grep -c '^ok ' "$log")
	f=$(grep -c '^not ok ' "$log")
	pass=$((pass + p)); fail=$((fail + f))
	status="ok"
	if [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
		status="FAIL (exit $rc)"
		# A crash or a non-zero exit without a failed check still counts as a failure.
		[ "$f" -eq 0 ] && { fail=$((fail + 1)); broken=$((broken + 1)); }
	fi
	printf '%-40s %4d checks  %3ds  %s\n' "$t" $((p + f)) $(( $(date +%s) - start )) "$status"
	if [ "$status" != ok ]; then
		grep -A8 '^not ok ' "$log" | sed 's/^/    /'
		[ "$f" -eq 0 ] && tail -15 "$log" | sed 's/^/    /'
	fi
done
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
