#!/bin/bash
# pipelines/shards.sh: 4 shards with 2 workers join to the serial run byte
# for byte (with and without --score), so does a Slurm array of
# shards.sbatch tasks and --join-only; a corrupt shard is reported by
# number, the others are kept, and re-running after the fix redoes only it.
. "$(dirname "$0")/lib.sh"
FIX=$TOP/tests/fixtures/train
SH=$TOP/pipelines/shards.sh

expect "shards.sh parses (bash -n)" bash -n "$SH"
expect "shards.sbatch parses (bash -n)" bash -n "$TOP/pipelines/shards.sbatch"

tiny_base base
# 48 samples, 12 a shard: the random model answers the two views differently
# rarely, and every shard must hold pairs.
seva-synth --split unlabeled -n 48 -s 1 >all.mp
mkdir in
seva-cat -q --split in/s --per 12 all.mp
set -- in/s-000000.tar in/s-000001.tar in/s-000002.tar in/s-000003.tar
check "4 input shards" -f "$4"

# The serial run: the same filters over all samples at once.
seva-augment -q -r diffusion:t=500 -s 0 all.mp >aug.mp &&
	seva-generate -q -m base -s 0 aug.mp >gen.mp &&
	seva-pair -q -s 0 gen.mp >serial.mp &&
	seva-dpo -q --score -m base serial.mp >serial-scored.mp ||
	{ echo "Bail out! the serial run failed"; exit 1; }
seva-cat --jsonl serial.mp >serial.jsonl
check "the serial run makes pairs ($(wc -l <serial.jsonl))" "$(wc -l <serial.jsonl)" -ge 4

expect "4 shards, -P 2" "$SH" -m base -o a -P 2 "$@"
same "joined shards equal the serial run byte for byte" serial.mp a/pairs.msgpack
expect "4 shards, -P 2, --score" "$SH" -m base -o b -P 2 --score "$@"
same "... with reference scores too" serial-scored.mp b/pairs.msgpack

# Slurm: one array task per shard, then the join.
for i in 0 1 2 3; do
	SLURM_ARRAY_TASK_ID=$i bash "$TOP/pipelines/shards.sbatch" base c "$@" 2>>c.err ||
		echo "task $i failed" >>c.err
done
check "4 Slurm array tasks (shards.sbatch) ran" ! -s c.err
diag <c.err
expect "--join-only" "$SH" --join-only -m base -o c "$@"
same "... equals the serial run" serial.mp c/pairs.msgpack

# A corrupt shard: reported, the others kept, re-run redoes only it.
cp in/s-000002.tar good.tar
head -c 1500 good.tar >in/s-000002.tar
expect_fail "a corrupt shard fails the run" 1 "$SH" -m base -o d -P 2 "$@"
stderr_has "... naming the shard and its log" "shard 2 \(in/s-000002.tar\) failed; see d/part-000002.log"
check "... no join" ! -e d/pairs.msgpack
check "... no part for it, nor a temporary" ! -e d/part-000002.msgpack -a ! -e d/part-000002.tmp
check "... the other three parts are kept" -s d/part-000000.msgpack -a -s d/part-000001.msgpack \
	-a -s d/part-000003.msgpack
check "... its log says why" -s d/part-000002.log
stat -c '%n %i %y' d/part-00000[013].* >before.txt
cp good.tar in/s-000002.tar
expect "re-run after the fix" "$SH" -m base -o d -P 2 "$@"
stat -c '%n %i %y' d/part-00000[013].* >after.txt
same "... left the three good shards' parts and logs untouched" before.txt after.txt
check "... made the missing part" -s d/part-000002.msgpack
same "... and the join equals the serial run" serial.mp d/pairs.msgpack

expect_fail "no shards: usage" 2 "$SH" -m base -o e
done_testing
