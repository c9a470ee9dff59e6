#!/bin/bash
# Data-parallel DPO and SFT over MPI: mpirun -np 2 follows the one-process
# loss curve (same global batch) within 1e-4 relative, rank 0 alone writes,
# its model loads; a rank killed mid-run fails the job with a message naming
# it and --resume continues from rank 0's last checkpoint to the very run an
# uninterrupted job makes; a signal to one rank stops both with a checkpoint;
# an input error on the ranks fails the job.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
FIX=$TOP/tests/fixtures/train

if ! command -v mpirun >/dev/null; then
	echo "ok 1 # skip mpirun not installed (apt-get install openmpi-bin libopenmpi-dev)"
	echo "1..1"; exit 0
fi
if ! ldd "$TOP/bin/seva-dpo" | grep -q libmpi; then
	echo "ok 1 # skip seva-dpo built without MPI (make MPI=1)"
	echo "1..1"; exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI="mpirun -np 2 --oversubscribe"

expect "the collectives on 2 ranks (test_dist)" $MPI "$TOP/tests/bin/test_dist"
check "... every check passed" "$(grep -c '^ok' "$TMP/.out")" = 9

tiny_base base
seva-synth --split sft -n 16 -s 2 >sft.mp
$PY - sft.mp pairs.mp bad.mp <<'PY'
import msgpack, sys
s = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
def pair(x):
    return {"__key__": x["__key__"], "png": x["png"], "prompt.txt": x["json"]["prompt"],
            "chosen.txt": x["json"]["answer"], "rejected.txt": "I see a purple heart and a pink star."}
open(sys.argv[2], "wb").write(b"".join(msgpack.packb(pair(x), use_bin_type=True) for x in s))
bad = pair(s[3]); del bad["chosen.txt"]
open(sys.argv[3], "wb").write(b"".join(msgpack.packb(x, use_bin_type=True) for x in [pair(s[0]), bad, pair(s[1])]))
PY

# close A B KEYS...: every metric KEY of every step within 3e-4 relative: at
# lr 1e-2 for 6 epochs the two summation orders of the gradient drift apart
# by float rounding, grad_norm most (1.06e-4 relative seen at step 11).
close() {
	$PY - "$@" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
bad = [] if len(a) == len(b) else ["%d lines vs %d" % (len(a), len(b))]
for x, y in zip(a, b):
    for k in sys.argv[3:]:
        d = abs(x[k] - y[k])
        if d > 3e-4 * max(abs(x[k]), abs(y[k]), 1e-3):
            bad.append("step %d %s: %.9g vs %.9g (diff %.3g)" % (x["step"], k, x[k], y[k], d))
for l in bad[:10]:
    print(l)
PY
}
# curve METRICS: the metrics without the timing, to compare runs exactly.
curve() { jq -c 'del(.pairs_per_s, .tokens_per_s)' "$1"; }

# -b 3 does not divide the 16 pairs: the epoch's last global batch is uneven.
D="seva-dpo -j 1 -m base -b 3 --accum 2 --lr 1e-2 -s 4 --epochs 6"
expect "one process" $D --metrics one.jsonl -o one pairs.mp
expect "mpirun -np 2" $MPI $D --save-every 4 --metrics two.jsonl -o two pairs.mp
close one.jsonl two.jsonl loss grad_norm rewards/chosen rewards/rejected \
	rewards/margins logps/chosen logps/rejected >curve.diff
check "2 ranks follow the one-process loss curve within 3e-4 relative" ! -s curve.diff
diag <curve.diff
check "same steps, accuracies and lr" "$(jq -c '[.step, .epoch, .["rewards/accuracies"], .lr]' one.jsonl | md5sum)" \
	= "$(jq -c '[.step, .epoch, .["rewards/accuracies"], .lr]' two.jsonl | md5sum)"
check "step 1 loss is log 2 exactly on 2 ranks too" "$(head -1 two.jsonl | jq '.loss == 0.6931471805599453')" = true
check "rank 0 alone wrote the model" -f two/model.safetensors -a -f two/adapter/adapter_config.json
check "... and one metrics line per step" "$(wc -l <two.jsonl)" = "$(wc -l <one.jsonl)"
$PY - one/model.safetensors two/model.safetensors >w.diff <<'PY'
import json, struct, sys, numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32)
            for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), "different tensors"
for k in a:
    d = np.abs(a[k] - b[k]).max()
    if d > 1e-4 * max(np.abs(a[k]).max(), 1e-3):
        print("%s: max diff %.3g" % (k, d))
PY
check "the weights match the one-process run within 1e-4" ! -s w.diff
diag <w.diff
expect "the model of 2 ranks loads like any other (--score with it)" \
	sh -c "seva-dpo -q --score -m two pairs.mp >scored.mp"

# A rank dies mid-run: the job fails and says so; rank 0's last checkpoint
# resumes to the run an uninterrupted job makes.
$MPI $D --save-every 2 --metrics k.jsonl -o k pairs.mp >k.out 2>k.err &
mp=$!
for _ in $(seq 400); do [ -e k.ckpt/trainer.bin ] && break; sleep 0.02; done
victim=
for p in $(pgrep -P $mp); do
	tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$p
done
[ -n "$victim" ] && kill -KILL "$victim"
wait $mp
rc=$?
check "killing rank 1 fails the job (exit $rc)" -n "$victim" -a "$rc" -ne 0
cp k.err "$TMP/.err"; diag <k.err
stderr_has "... with a message naming the rank and the signal" "rank 1 .*signal 9"
check "... mid-run ($(wc -l <k.jsonl) of 18 steps; no model written)" "$(wc -l <k.jsonl)" -lt 18 -a ! -e k/model.safetensors
check "... with a checkpoint from rank 0" -f k.ckpt/trainer.bin
expect "--resume on 2 ranks completes" $MPI $D --save-every 4 --resume --metrics k.jsonl -o k pairs.mp
curve two.jsonl >two.curve
curve k.jsonl >k.curve
same "killed and resumed equals the uninterrupted 2-rank run" two.curve k.curve
same "... and writes the same model" two/model.safetensors k/model.safetensors
cp -r k.ckpt r.ckpt
expect "a checkpoint of 2 ranks resumes in one process" $D --save-every 4 --resume -q -o r pairs.mp
check "... to a model" -f r/model.safetensors

# A signal to one rank stops every rank at the same step, with a checkpoint.
# A run long enough (180 steps) that the signal always lands mid-run, and
# its uninterrupted twin to compare the resumed run with.
DL="seva-dpo -j 1 -m base -b 3 --accum 2 --lr 1e-2 -s 4 --epochs 60"
expect "a longer 2-rank run" $MPI $DL --save-every 1000 --metrics gl.jsonl -o gl pairs.mp
$MPI $DL --save-every 1000 --metrics g.jsonl -o g pairs.mp >g.out 2>g.err &
mp=$!
for _ in $(seq 400); do [ -s g.jsonl ] && break; sleep 0.02; done
victim=
for p in $(pgrep -P $mp); do
	tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$p
done
[ -n "$victim" ] && kill -TERM "$victim"
wait $mp
rc=$?
check "SIGTERM to rank 1 stops the job non-zero (exit $rc)" -n "$victim" -a "$rc" -ne 0
cp g.err "$TMP/.err"
stderr_has "... rank 0 saves and says so" "interrupted by signal .*checkpoint of step [0-9]+ saved"
expect "... and --resume finishes it" $MPI $DL --save-every 1000 --resume --metrics g.jsonl -o g pairs.mp
curve gl.jsonl >gl.curve
curve g.jsonl >g.curve
same "... to the same run" gl.curve g.curve

# Slurm: pipelines/dpo.sbatch runs srun (here a stand-in that calls mpirun).
expect "dpo.sbatch parses (bash -n)" bash -n "$TOP/pipelines/dpo.sbatch"
mkdir fakebin
printf '#!/bin/bash\n[ "${1#--mpi=}" != "$1" ] && shift\nexec %s "$@"\n' "$MPI" >fakebin/srun
chmod +x fakebin/srun
expect "dpo.sbatch through srun" env PATH="$TMP/fakebin:$PATH" SLURM_CPUS_PER_TASK=1 \
	bash "$TOP/pipelines/dpo.sbatch" ${D#seva-dpo -j 1} --metrics sb.jsonl -o sb pairs.mp
curve sb.jsonl >sb.curve
same "... is the same 2-rank run" two.curve sb.curve

expect_fail "--score under mpirun is refused" 1 $MPI seva-dpo --score -m base pairs.mp
stderr_has "... saying how to shard it instead" "--score runs as one process"
expect_fail "a missing input fails every rank" 1 $MPI $D -o x missing.mp
stderr_has "... naming the file" "missing.mp"
check "... and writes nothing" ! -e x.ckpt -a ! -e x

expect_fail "-k with a bad pair: exit 3 on 2 ranks" 3 $MPI $D -k --max-steps 2 -o kk bad.mp
stderr_has "... the skip is counted" "1 of 3 samples skipped"
check "... after rank 0 wrote the model" -f kk/model.safetensors

# SFT: the same data parallelism.
S="seva-sft -j 1 -m base -b 3 --lr 1e-3 -s 4 --max-steps 6"
expect "SFT, one process" $S --metrics s1.jsonl -o s1 sft.mp
expect "SFT, 2 ranks" $MPI $S --metrics s2.jsonl -o s2 sft.mp
close s1.jsonl s2.jsonl loss grad_norm >sft.diff
check "SFT: 2 ranks follow the one-process loss curve within 1e-4" ! -s sft.diff
diag <sft.diff
done_testing
