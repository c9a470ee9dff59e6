#!/bin/bash
# Training's integrity: a damaged or hand-edited trainer.bin is refused on
# --resume with the file and the field named (the checksum catches a flipped
# byte; every field is also checked in its own right), an unwritable -o is
# found before the first step, temporary files do not outlive their run, and
# -b × --accum is range-checked.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

tiny_base base
seva-synth --split sft -n 6 -s 5 >sft.mp
T="seva-sft -j 1 -q -m base -b 2 --max-steps 30 -s 9"

# A valid checkpoint of step 5 (epoch 1, position 2 of 6), then variants.
expect "a checkpoint of step 5" $T --save-every 5 --stop-after 5 -o ck sft.mp
cp ck.ckpt/trainer.bin good.bin
expect "the untouched checkpoint resumes" $T --resume --stop-after 1 -o ck sft.mp
check "... and says nothing of an earlier run" "$(grep -c "earlier run" "$TMP/.err")" = 0
cp good.bin ck.ckpt/trainer.bin
# the same run again without --resume: it starts from 0, and says that an
# earlier checkpoint is there and will be replaced (even with -q)
expect "without --resume beside an earlier checkpoint: it runs" $T --stop-after 1 -o ck2 sft.mp
check "... a fresh output says nothing of one" ! -s "$TMP/.err"
mkdir -p ck3.ckpt && cp good.bin ck3.ckpt/trainer.bin
expect "... beside one" $T --stop-after 1 -o ck3 sft.mp
stderr_has "... says so, naming it and --resume" \
	"^seva-sft: ck3.ckpt holds an earlier run's checkpoint: this run starts from step 0 \(--resume continues that one\)"

# corrupt NAME FIELD VALUE [raw]: writes ck.ckpt/trainer.bin from good.bin
# with FIELD set to VALUE; the checksum is recomputed unless "raw" (a byte
# changed behind its back), so that the field's own check is what is tested.
corrupt() {
	$PY - good.bin ck.ckpt/trainer.bin "$@" <<'PY'
import hashlib, struct, sys
src, dst, field, value = sys.argv[1:5]
raw = len(sys.argv) > 5
d = bytearray(open(src, "rb").read())
body, digest = d[:-32], d[-32:]
off = {"n": 32, "settings_len": 40, "step": 48, "total": 56, "pos": 64, "tokens": 72,
       "opt_t": 80, "epoch": 88, "seed": 96}
slen = struct.unpack_from("<q", body, 40)[0]
n = struct.unpack_from("<q", body, 32)[0]
order = 168 + slen
if field in off:
    struct.pack_into("<q", body, off[field], int(value))
elif field == "rng":
    body[104:136] = bytes(32)
elif field == "have_normal":
    struct.pack_into("<q", body, 136, int(value))
elif field in ("beta1", "eps"):
    struct.pack_into("<f", body, 152 if field == "beta1" else 160, float(value))
elif field == "order":            # entry 5 := value
    struct.pack_into("<I", body, order + 4 * 5, int(value))
elif field == "order_all":
    for i in range(n):
        struct.pack_into("<I", body, order + 4 * i, int(value))
elif field == "order_swap":       # still a permutation, not the epoch's
    a, b = struct.unpack_from("<II", body, order)
    struct.pack_into("<II", body, order, b, a)
elif field == "param":            # the first parameter
    struct.pack_into("<f", body, order + 4 * n, float(value))
elif field == "flip":             # one bit of the parameters
    body[order + 4 * n + int(value)] ^= 1
elif field == "magic":
    body[0:8] = b"SEVACKPX"
elif field == "v1":               # the format before the checksum
    body[0:8] = b"SEVACKP1"
out = body + (digest if raw else hashlib.sha256(body).digest())
if field == "truncate":
    out = d[:int(value)]
elif field == "trailing":
    out = d + b"x"
open(dst, "wb").write(out)
PY
}

# resume_refused NAME PATTERN FIELD VALUE [raw]
resume_refused() {
	local name=$1 pat=$2
	shift 2
	corrupt "$@"
	expect_fail "$name: refused, exit 1" 1 $T --resume --metrics m.jsonl -o ck sft.mp
	stderr_has "$name: the message names the file and the field" "ck\.ckpt/trainer\.bin: .*$pat"
	check "$name: no step was taken" ! -s m.jsonl
}
resume_refused "a flipped parameter bit" "SHA-256 does not match" flip 9 raw
resume_refused "a changed position" "SHA-256 does not match" pos 3 raw
resume_refused "pos -100000" "position -100000" pos -100000
resume_refused "pos 2^40" "position 1099511627776" pos 1099511627776
resume_refused "step -5 (a negative learning rate)" "step -5 not in" step -5
resume_refused "step 2^40" "step 1099511627776 not in" step 1099511627776
resume_refused "total 0" "total 0" total 0
resume_refused "epoch -3" "epoch -3 not in" epoch -3
resume_refused "epoch 4 at step 5" "epoch 4" epoch 4
resume_refused "AdamW t -1000" "AdamW t -1000" opt_t -1000
resume_refused "tokens -1" "tokens -1" tokens -1
resume_refused "another seed" "seed 12345" seed 12345
resume_refused "an all-zero RNG state" "random generator state" rng 0
resume_refused "a cached normal flag of 7" "random generator state" have_normal 7
resume_refused "beta1 NaN" "AdamW beta1 nan" beta1 nan
resume_refused "eps 0" "eps 0," eps 0
resume_refused "an order entry = n" "data order entry 5 is 6: not a permutation" order 6
resume_refused "every order entry 2^31" "data order entry 0 is 2147483648: not a permutation" \
	order_all 2147483648
resume_refused "a permuted order that is not the epoch's" "data order entry 0 is .* order has" \
	order_swap 0
resume_refused "a NaN parameter" "tensor '.*' element 0 is nan" param nan
resume_refused "another data set size" "data set of 7 examples" n 7
resume_refused "settings_len -1" "corrupt header" settings_len -1
resume_refused "settings_len 2^23 (reads past the settings)" "truncated|SHA-256|other settings" \
	settings_len 8388608
resume_refused "bad magic" "not a seva trainer checkpoint" magic 0
resume_refused "an older checkpoint format" "older seva, without a checksum" v1 0
resume_refused "truncated to 100 bytes" "not a seva trainer checkpoint" truncate 100
resume_refused "the digest cut off" "truncated checkpoint" truncate $(($(stat -c %s good.bin) - 16))
resume_refused "a byte after the end" "bytes after its end" trailing 0
cp good.bin ck.ckpt/trainer.bin
expect "the good checkpoint still resumes" $T --resume --stop-after 1 -o ck sft.mp

# An unwritable -o is found before the first step (it was found after the
# last, losing the run).
for t in sft dpo; do
	case $t in
	sft) cmd="$T --metrics w.jsonl -o /proc/seva-no/out sft.mp" ;;
	dpo) cmd="seva-dpo -j 1 -q -m base -b 2 --max-steps 30 --metrics w.jsonl -o /proc/seva-no/out sft.mp" ;;
	esac
	rm -f w.jsonl
	expect_fail "seva-$t: -o that cannot be made: exit 1" 1 $cmd
	stderr_has "seva-$t: the message names the output" "/proc/seva-no"
	check "seva-$t: before any training step" ! -s w.jsonl
	if grep -q 'adapter\.tmp' "$TMP/.err"; then not_ok "seva-$t: no OUT.adapter.tmp.PID name"; else ok "seva-$t: no OUT.adapter.tmp.PID name"; fi
done
touch afile
expect_fail "-o an existing file: exit 1 before training" 1 $T --metrics w.jsonl -o afile sft.mp
stderr_has "... named" "afile: exists and is not a directory"
mkdir -p notmodel && echo keep >notmodel/x
expect_fail "-o a directory that is not a model: exit 1" 1 $T -o notmodel sft.mp
check "... and it is left alone" "$(cat notmodel/x)" = keep
expect_fail "--init-only to an unwritable -o: exit 1" 1 seva-sft --config "$FIX/tiny-config.json" \
	--tokenizer tok.json --init-only -o /proc/seva-no/init
check "... nothing staged beside it" -z "$(ls -d /proc/seva-no* 2>/dev/null)"

# --init-only with a bad tokenizer or config leaves no OUT.init.tmp.PID.
echo '{"model": {"type": "BPE"' >badtok.json
expect_fail "--init-only, bad tokenizer: exit 1" 1 seva-sft --config "$FIX/tiny-config.json" \
	--tokenizer badtok.json --init-only -o rnd
echo '{"text_config": {"hidden_size": -3}}' >badcfg.json
expect_fail "--init-only, bad config: exit 1" 1 seva-sft --config badcfg.json \
	--tokenizer tok.json --init-only -o rnd
check "--init-only errors leave nothing" -z "$(ls -d rnd* 2>/dev/null)"

# A resumed run removes what killed runs of its output left, if their
# process is gone; a live process's files stay.
(:) & dead=$!
wait $dead
expect "a checkpoint to resume" $T --save-every 5 --stop-after 5 -o kr sft.mp
mkdir -p kr.tmp.$dead && echo partial >kr.tmp.$dead/model.safetensors.tmp.$dead
echo partial >kr.ckpt/trainer.bin.tmp.$dead
echo partial >kr.ckpt/state.json.tmp.$dead
echo partial >km.jsonl.tmp.$dead
echo live >kr.ckpt/trainer.bin.tmp.$$
expect "--resume" seva-sft -j 1 -m base -b 2 --max-steps 30 -s 9 --resume --stop-after 1 \
	--metrics km.jsonl -o kr sft.mp
check "the dead run's model directory is removed" ! -e kr.tmp.$dead
check "its partial trainer.bin is removed" ! -e kr.ckpt/trainer.bin.tmp.$dead
check "its state.json temporary is removed" ! -e kr.ckpt/state.json.tmp.$dead
check "its metrics temporary is removed" ! -e km.jsonl.tmp.$dead
check "a live process's temporary stays" -e kr.ckpt/trainer.bin.tmp.$$
stderr_has "each removal is named" "removed '.*kr.ckpt/trainer.bin.tmp.$dead'"

# SIGTERM to a filter writing -o FILE removes FILE.tmp.PID.
seva-synth --split unlabeled -n 2 -q >u.mp
seva-augment -q u.mp >aug.mp
for t in cat augment generate pair; do
	case $t in
	cat|augment) in=u.mp; cmd="seva-$t -q" ;;
	generate) in=aug.mp; cmd="seva-generate -q -m base --max-new-tokens 2" ;;
	pair) in=aug.mp; cmd="seva-pair -q" ;;
	esac
	rm -f fifo; mkfifo fifo
	$cmd -o out-$t.mp <fifo &
	pid=$!
	exec 3>fifo
	head -c 10 $in >&3 # part of a record: the tool waits for the rest
	for i in $(seq 1 100); do ls out-$t.mp.tmp.* >/dev/null 2>&1 && break; sleep 0.05; done
	had=$(ls out-$t.mp.tmp.* 2>/dev/null | wc -l)
	kill -TERM $pid
	wait $pid
	rc=$?
	exec 3>&-
	check "seva-$t: the temporary existed while it ran" "$had" = 1
	check "seva-$t: SIGTERM ends it by the signal (status $rc)" $rc = 143
	check "seva-$t: SIGTERM leaves no out-$t.mp.tmp.PID" -z "$(ls out-$t.mp* 2>/dev/null)"
done

# -b × --accum: each in range, the product not.
expect_fail "-b 65536 --accum 65536: usage error" 2 seva-sft -m base -b 65536 --accum 65536 \
	--max-steps 1 -o o14 sft.mp
stderr_has "the message names both options" "-b 65536 x --accum 65536 = 4294967296.*at most"
check "nothing written" -z "$(ls -d o14* 2>/dev/null)"
expect_fail "seva-dpo too" 2 seva-dpo -m base -b 4096 --accum 4096 -o o14 sft.mp

done_testing
