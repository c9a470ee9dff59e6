#!/bin/bash
# --features DIR: the frozen tower's output kept between seva-generate and
# seva-dpo. On the SmolVLM fixture: generation's answers and log-probs, DPO's
# metrics and saved weights (full and LoRA), --score's reference are the
# same bytes with the cache as without it, whether generate filled it or
# seva-dpo fills its own misses; nothing is written outside DIR; a tampered
# file or one of another tower is refused naming it (-k: encoded again);
# bad values are usage errors.
. "$(dirname "$0")/lib.sh"
FIX=$TOP/tests/fixtures/idefics3/smol

i=0
for f in "$TOP"/tests/fixtures/image/photo-420.jpg "$TOP"/tests/fixtures/image/photo-444p.jpg \
	"$TOP"/tests/fixtures/idefics3/img-64x41.png "$TOP"/tests/fixtures/idefics3/img-20x51.png; do
	ext=${f##*.}
	printf '{"__key__":"s%d","%s":{"base64":"%s"},"json":{"prompt":"What is in the image?","answer":"A red circle."}}\n' \
		$i "$ext" "$(base64 -w0 "$f")"
	i=$((i + 1))
done >in.jsonl
seva-cat in.jsonl >in.msgpack
seva-augment -q -r diffusion:t=800 -o aug.msgpack in.msgpack

# generation: byte-identical records (answers, gen.json's log-probs)
gen="seva-generate -m $FIX --max-new-tokens 8"
expect "generate without a cache" $gen -q -b 3 -o g0.msgpack aug.msgpack
# every file and its digest, but the cache's, the output's and the test's own
snapshot() { find . -type f ! -path './fc/*' ! -path './out/g1.msgpack' ! -name '.out' ! -name '.err' \
	! -name 'snap*' -exec md5sum {} + | sort -k 2; }
mkdir out
snapshot >snap-before
(cd out && expect "generate --features fills a new cache" $gen -b 3 --features ../fc -o g1.msgpack ../aug.msgpack)
stderr_has "... encoding every clean view" "fc: features of 0 images read, 4 encoded \(f32\)"
snapshot >snap-after
same "nothing written outside DIR and -o" snap-before snap-after
same "the same records with the cache" g0.msgpack out/g1.msgpack
check "one file per clean image, nothing else in DIR" "$(ls -A fc | grep -c '^[0-9a-f]\{64\}\.feat$')" = 4 -a \
	"$(ls -A fc | wc -l)" = 4
expect "generate again, another batch size" $gen -b 2 --features fc -o g2.msgpack aug.msgpack
stderr_has "... reads every clean view" "fc: features of 4 images read, 0 encoded"
same "the same records from the cache's files" g0.msgpack g2.msgpack

# DPO: the cache generate made, a cache seva-dpo fills itself, none
seva-pair -q -o pairs.msgpack g0.msgpack 2>/dev/null
dpo="seva-dpo -q -m $FIX --lr 1e-2 --max-steps 3 -b 2"
norate() { jq -c 'del(.pairs_per_s)' "$1"; }
for t in full lora; do
	o=--full
	[ $t = lora ] && o="--lora 4"
	expect "DPO $t without a cache" $dpo $o -o $t-0 --metrics $t-0.jsonl pairs.msgpack
	expect "DPO $t on generate's cache" $dpo $o -o $t-1 --metrics $t-1.jsonl --features fc pairs.msgpack
	cp -r fc fc-before
	expect "DPO $t on its own new cache" $dpo $o -o $t-2 --metrics $t-2.jsonl \
		--features fc-$t pairs.msgpack
	for k in 1 2; do
		norate $t-0.jsonl >a.jsonl
		norate $t-$k.jsonl >b.jsonl
		same "DPO $t ($k): the same metrics" a.jsonl b.jsonl
		same "DPO $t ($k): the same weights" $t-0/model.safetensors $t-$k/model.safetensors
	done
	check "DPO $t left generate's cache as it was" -z "$(diff -r fc fc-before)"
	rm -rf fc-before
done
expect "DPO --ref-model without a cache" $dpo --full -o ref-0 --metrics ref-0.jsonl --ref-model $FIX \
	pairs.msgpack
expect "DPO --ref-model with the cache (the reference's tower runs)" $dpo --full -o ref-1 \
	--metrics ref-1.jsonl --ref-model $FIX --features fc pairs.msgpack
norate ref-0.jsonl >a.jsonl
norate ref-1.jsonl >b.jsonl
same "... the same metrics" a.jsonl b.jsonl
same "... the same weights" ref-0/model.safetensors ref-1/model.safetensors
check "seva-dpo filled its misses: one file per image" "$(ls fc-full | wc -l)" = "$(ls fc | wc -l)"
same "... the same files generate wrote" "fc/$(ls fc | head -1)" "fc-full/$(ls fc | head -1)"
expect "seva-dpo -v-less summary" seva-dpo -m $FIX --lr 1e-2 --max-steps 3 -b 2 --full -o full-3 \
	--features fc pairs.msgpack
stderr_has "the reference's pass and every step read the cache" \
	"fc: features of [0-9]+ images read, 0 encoded"
expect "--score without a cache" seva-dpo --score -q -m $FIX -o s0.msgpack pairs.msgpack
expect "--score with the cache" seva-dpo --score -q -m $FIX --features fc -o s1.msgpack pairs.msgpack
same "the same reference log-probs" s0.msgpack s1.msgpack

# the trained model's tower is the base's: its generation reads the cache
tgen="seva-generate -m full-0 --max-new-tokens 8 -b 3"
expect "generate with the DPO-trained model reads the cache" $tgen --features fc -o g3.msgpack \
	aug.msgpack
stderr_has "... every clean view" "fc: features of 4 images read, 0 encoded"
expect "the same model without" $tgen -q -o g4.msgpack aug.msgpack
same "... the same records" g3.msgpack g4.msgpack

# refused: a tampered file, another tower
f=fc/$(ls fc | head -1)
cp "$f" saved.feat
printf '\001' | dd of="$f" bs=1 seek=300 conv=notrunc status=none
expect_fail "a tampered file ends generate" 1 $gen -q --features fc -o bad.msgpack aug.msgpack
stderr_has "... naming it" "$f: the payload's digest does not match"
expect_fail "... and seva-dpo" 1 $dpo --full -o bad --features fc pairs.msgpack
stderr_has "... naming it" "$f: the payload's digest does not match"
expect "with -k: encoded again" $gen -k --features fc -o g5.msgpack aug.msgpack
stderr_has "... counted" "fc: 1 files refused and encoded again"
same "... the same records" g0.msgpack g5.msgpack
check "... the file left as it is" -n "$(cmp "$f" saved.feat 2>&1)"
expect "seva-dpo -k: encoded again" seva-dpo -k -m $FIX --lr 1e-2 --max-steps 3 -b 2 --full \
	-o full-k --metrics full-k.jsonl --features fc pairs.msgpack
stderr_has "... counted once" "fc: 1 files refused and encoded again"
norate full-0.jsonl >a.jsonl
norate full-k.jsonl >b.jsonl
same "... the same metrics" a.jsonl b.jsonl
same "... the same weights" full-0/model.safetensors full-k/model.safetensors
cp saved.feat "$f"
expect "seva-sft trains a new tower" seva-sft -q -m $FIX -o newtower --train vision,projector \
	--lr 1e-2 --warmup-steps 0 --max-steps 1 -b 2 in.msgpack
expect_fail "another tower's cache is refused" 1 seva-generate -q -m newtower --max-new-tokens 8 \
	--features fc -o bad.msgpack aug.msgpack
stderr_has "... naming the file" "fc/[0-9a-f]{64}\.feat: made by another vision tower"
expect_fail "... in seva-dpo too" 1 seva-dpo -q -m newtower --full --max-steps 1 -o bad --features fc \
	pairs.msgpack
stderr_has "... naming the file" "fc/[0-9a-f]{64}\.feat: made by another vision tower"
check "nothing was written for the refused runs" ! -e bad

# usage
expect_fail "--features '' is a usage error (generate)" 2 $gen --features '' aug.msgpack
stderr_has "... naming the option" "--features"
expect_fail "--features '' is a usage error (dpo)" 2 $dpo --full -o x --features '' pairs.msgpack
stderr_has "... naming the option" "--features"
expect_fail "--features with a training tower" 2 $dpo --full -o x --train vision,projector \
	--features fc pairs.msgpack
stderr_has "... says why" "not with --train vision"
: >afile
expect_fail "--features naming a file" 1 $gen -q --features afile -o x.msgpack aug.msgpack
stderr_has "... says so" "afile"
done_testing
