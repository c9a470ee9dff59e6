#!/bin/bash
# shards.sh — run augment → generate → pair (→ seva-dpo --score) per shard,
# in parallel, then join. Every random draw is seeded per sample, so the
# joined result is byte-identical to one serial run over the same samples.
#
#   pipelines/shards.sh -m MODEL -o OUTDIR [-P JOBS] [-r RECIPE] [-s SEED]
#                       [--score] [--hosts H1,H2,...] [--join-only] SHARD...
#   pipelines/shards.sh --one INDEX -m MODEL -o OUTDIR [...] SHARD...   (one shard; for Slurm)
#
# Output: OUTDIR/part-%06d.msgpack per input shard (written to a temporary
# name, renamed when the shard is complete), OUTDIR/part-%06d.log, and the
# join OUTDIR/pairs.msgpack. A shard whose part exists is not redone, so
# re-running the same command re-runs only the shards that failed.
# Launchers: local `xargs -P` (default), GNU parallel --sshlogin with
# --hosts (same paths on every host), or a Slurm array (pipelines/shards.sbatch).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PATH="$(dirname "$here")/bin:$PATH"

model= out= jobs=2 recipe=diffusion:t=500 seed=0 score= hosts= one= join_only=
shards=()
usage() { sed -n '6,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	-m) model=$2; shift 2 ;;
	-o) out=$2; shift 2 ;;
	-P) jobs=$2; shift 2 ;;
	-r) recipe=$2; shift 2 ;;
	-s) seed=$2; shift 2 ;;
	--score) score=1; shift ;;
	--hosts) hosts=$2; shift 2 ;;
	--one) one=$2; shift 2 ;;
	--join-only) join_only=1; shift ;;
	-h|--help) usage ;;
	-*) echo "shards.sh: unknown option '$1'" >&2; usage ;;
	*) shards+=("$1"); shift ;;
	esac
done
[ -n "$model" ] && [ -n "$out" ] && [ ${#shards[@]} -gt 0 ] || usage
mkdir -p "$out"

part() { printf '%s/part-%06d' "$out" "$1"; }

# One shard: the same filters as a serial run, written atomically.
run_one() {
	local i=$1 src=${shards[$1]} p
	p=$(part "$i")
	[ -e "$p.msgpack" ] && return 0
	{
		seva-augment -q -r "$recipe" -s "$seed" "$src" |
		seva-generate -q -m "$model" -s "$seed" |
		seva-pair -q -s "$seed" |
		if [ -n "$score" ]; then seva-dpo -q --score -m "$model"; else cat; fi
	} > "$p.tmp" 2> "$p.log" && mv "$p.tmp" "$p.msgpack" || {
		rm -f "$p.tmp"
		echo "shards.sh: shard $i ($src) failed; see $p.log" >&2
		return 1
	}
}

if [ -n "$one" ]; then
	run_one "$one"
	exit
fi

if [ -z "$join_only" ]; then
	export -f run_one part
	export model out recipe seed score
	# Arrays cannot be exported: pass the shard list through a file.
	printf '%s\n' "${shards[@]}" > "$out/shards.txt"
	idx=$(seq 0 $(( ${#shards[@]} - 1 )))
	status=0
	if [ -n "$hosts" ]; then
		command -v parallel >/dev/null || { echo "shards.sh: --hosts needs GNU parallel (apt-get install parallel)" >&2; exit 1; }
		printf '%s\n' $idx | parallel -j "$jobs" -S "$hosts" --workdir "$PWD" \
			"$here/shards.sh" --one {} -m "$model" -o "$out" -r "$recipe" -s "$seed" \
			${score:+--score} "${shards[@]}" || status=$?
	else
		printf '%s\n' $idx | xargs -P "$jobs" -I{} "$here/shards.sh" --one {} -m "$model" \
			-o "$out" -r "$recipe" -s "$seed" ${score:+--score} "${shards[@]}" || status=$?
	fi
	if [ "$status" -ne 0 ]; then
		echo "shards.sh: some shards failed; fix the cause and run the same command again" >&2
		exit 1
	fi
fi

# Join in shard order: concatenated msgpack streams are one stream.
for i in $(seq 0 $(( ${#shards[@]} - 1 ))); do
	p=$(part "$i")
	[ -e "$p.msgpack" ] || { echo "shards.sh: shard $i missing: $p.msgpack" >&2; exit 1; }
done
for i in $(seq 0 $(( ${#shards[@]} - 1 ))); do cat "$(part "$i").msgpack"; done > "$out/pairs.msgpack.tmp"
mv "$out/pairs.msgpack.tmp" "$out/pairs.msgpack"
echo "shards.sh: joined ${#shards[@]} shards into $out/pairs.msgpack" >&2
