# lib.sh — sourced by the shell tests (tests/t*.sh): TAP output, helpers.
# Assertions never pipe our binaries' output: the exit status would be lost.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
PATH="$TOP/bin:$PATH"
export LC_ALL=C
TMP=$(mktemp -d "${TMPDIR:-/tmp}/seva-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
_n=0
_failed=0

ok() { _n=$((_n + 1)); echo "ok $_n - $1"; }
not_ok() { _n=$((_n + 1)); _failed=$((_failed + 1)); echo "not ok $_n - $1"; }
diag() { sed 's/^/# /'; }

# expect NAME CMD...: passes if CMD exits 0.
expect() {
	local name=$1; shift
	if "$@" >"$TMP/.out" 2>"$TMP/.err"; then ok "$name"
	else not_ok "$name (exit $?)"; diag <"$TMP/.err"; fi
}
# expect_fail NAME STATUS CMD...: passes if CMD exits with STATUS.
expect_fail() {
	local name=$1 want=$2; shift 2
	"$@" >"$TMP/.out" 2>"$TMP/.err"
	local got=$?
	if [ "$got" = "$want" ]; then ok "$name"
	else not_ok "$name (exit $got, want $want)"; diag <"$TMP/.err"; fi
}
# stderr_has NAME PATTERN: the last expect*'s stderr matches grep -E PATTERN.
stderr_has() {
	if grep -Eq -- "$2" "$TMP/.err"; then ok "$1"
	else not_ok "$1"; echo "stderr does not match '$2':" | diag; diag <"$TMP/.err"; fi
}
# same NAME FILE1 FILE2: byte-identical files.
same() {
	if cmp -s "$2" "$3"; then ok "$1"
	else not_ok "$1"; cmp "$2" "$3" 2>&1 | diag; fi
}
# check NAME TEST-EXPRESSION...: passes if `test ...` holds.
check() {
	local name=$1; shift
	if test "$@"; then ok "$name"; else not_ok "$name: test $*"; fi
}
# memcap KB CMD...: CMD with its memory capped at KB, so that an allocation
# sized by input fails the test instead of the machine. The sanitizer build
# (make asan, SEVA_SANITIZE=1) reserves terabytes of address space for its
# shadow, which ulimit -v forbids: there its allocator refuses the size.
memcap() {
	local kb=$1; shift
	if [ -n "${SEVA_SANITIZE:-}" ]; then
		ASAN_OPTIONS="${ASAN_OPTIONS:-}:allocator_may_return_null=1:max_allocation_size_mb=$((kb / 1024))" "$@"
	else
		(ulimit -v "$kb"; exec "$@")
	fi
}
# The embedded tokenizer as tok.json and a random-weight model of the tiny
# training config at DIR (seed 3), as most trainer tests start.
tiny_base() {
	seva-synth --tokenizer >tok.json
	seva-sft --config "$TOP/tests/fixtures/train/tiny-config.json" --tokenizer tok.json \
		--preprocessor "$TOP/tests/fixtures/train/tiny-preprocessor.json" -s 3 --init-only \
		-o "$1" 2>init.err || { cat init.err; exit 1; }
}
# Pairs OUT from the sft records IN: each conversation's prompt and answer
# chosen, one fixed wrong answer rejected (training tests that need pairs
# but not seva-pair).
sft_pairs() {
	/usr/bin/python3 - "$1" "$2" <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
open(sys.argv[2], "wb").write(b"".join(msgpack.packb({"__key__": x["__key__"], "png": x["png"],
    "prompt.txt": x["json"]["prompt"], "chosen.txt": x["json"]["answer"],
    "rejected.txt": "A purple heart."}, use_bin_type=True) for x in s))
PY
}
# PY = the venv's python (tests/deps.sh makes it) for the tests that run
# transformers, PEFT or TRL; without it the test fails and stops here.
need_venv() {
	PY=$TOP/tests/vendor/venv/bin/python
	if [ ! -x "$PY" ]; then
		not_ok "the python environment is missing: run tests/deps.sh"
		done_testing
		exit
	fi
}
done_testing() { echo "1..$_n"; [ "$_failed" = 0 ]; }
