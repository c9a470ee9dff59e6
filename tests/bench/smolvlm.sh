#!/bin/bash
# smolvlm.sh — seva on SmolVLM-256M's shapes (ISSUE 15, Speed) beside
# transformers on the same shapes, in one run: image encoding per image,
# greedy generation at batch 1 and 8, the DPO step as seva-dpo runs it
# (reference scored once; the tower frozen, run once per pair), then the
# projected wall time of SeVa on 8k samples on this machine.
#
# The model: tests/bench/smolvlm.py writes config.json as transformers'
# Idefics3Config does with SmolVLM-256M-Instruct's shapes into a temporary
# directory; seva draws random weights for it (tests/bin/bench-engine, the
# figures of tests/bench/engine.c) and the peer draws its own
# (Idefics3ForConditionalGeneration in float32, torch of tests/vendor/venv).
# Nothing is downloaded and nothing is kept. seva runs f32 and bf16
# (--precision); the peer f32.
#
# The projection, for N samples (SMOLVLM_SAMPLES, default 8000) whose two
# views are each answered with 64 new tokens (the generation figure's
# length) and which all make pairs (an upper bound: SeVa drops the samples
# whose two answers agree):
#   generation = 2 N / (sequences per second at batch 8), the tower, the
#                prefill and the 64 steps all in the figure;
#   DPO epoch  = N / 8 steps of the full step: the reference's pass (seva-dpo
#                scores it once before training) plus policy forward,
#                backward and AdamW, 8 pairs of 32 prompt + 32 answer tokens.
# and again with --features (the clean views' tower output kept from the
# generation): the same generation, the DPO epoch of the step whose
# features are read from the cache (dpo_step_cached), the tower twice per
# sample; and the disk the cache takes for N images.
# Once per wall second (the machine as loaded now: the load average is
# printed) and once per CPU second (what the two cores would give unshared).
#
#   smolvlm.sh [-n STEPS]   (default: 1 timed DPO step after one warm-up)
cd "$(dirname "$0")/../.." || exit 1
steps=1
[ "$1" = -n ] && steps=$2
py=tests/vendor/venv/bin/python
if [ ! -x "$py" ]; then
	echo "smolvlm: no $py (tests/deps.sh makes it): skipped"
	exit 0
fi
N=${SMOLVLM_SAMPLES:-8000}

. tests/bench/build.bash
bench_build engine || exit 1

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
d=$tmp/smolvlm-256m
"$py" tests/bench/smolvlm.py config "$d" || exit 1
cp "$d/config.json" "$tmp/smolvlm-256m.json"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in f32 bf16; do
	tests/bin/bench-engine -j 2 -n "$steps" --what all --precision $p "$tmp/smolvlm-256m.json" \
		>>"$tmp/seva.json" || echo "(seva --precision $p failed)"
done
"$py" tests/bench/smolvlm.py peer "$d" "$steps" >"$tmp/peer.json" 2>"$tmp/peer.err" ||
	{ echo "(peer failed)"; cat "$tmp/peer.err"; }
echo "load average at end:   $(cut -d' ' -f1-3 /proc/loadavg)"
echo "seva: $(head -1 "$tmp/seva.json" | jq -r .blas); bf16: $(jq -r 'select(.what == "setup" and .precision == "bf16") | .precision_info' "$tmp/seva.json")"
echo "peer: transformers $("$py" -c 'import transformers; print(transformers.__version__)'), torch $(jq -r 'select(.torch) | .torch' "$tmp/peer.json" | head -1), $(jq -r 'select(.threads) | .threads' "$tmp/peer.json" | head -1) threads"
echo

# figure | seva f32 | seva bf16 | transformers f32 | f32 ratio | bf16 ratio |
# the ratios per CPU second. Ratios > 1: seva is faster.
jq -rs '
	(map(select(.src == "seva"))) as $s | (map(select(.src == "peer")) ) as $p |
	def pick($a; $w; $b; $pr): $a | map(select(.what == $w and
		(($b == null) or .batch == $b) and (($pr == null) or .precision == $pr))) | .[0];
	def f2: if . == null or . < 0 then "-" else . * 1000 | round / 1000 end;
	def q($a; $b): if $a != null and $b != null and $b > 0 then $a / $b else null end;
	# value (higher is better) and CPU seconds per unit of work
	def row($name; $k; $cpu; $w; $b):
		pick($s; $w; $b; "f32") as $f | pick($s; $w; $b; "bf16") as $h | pick($p; $w; $b; null) as $t |
		[$name, ($f | .[$k] | f2), ($h | .[$k] | f2), ($t | .[$k] | f2),
		 (q($f | .[$k]; $t | .[$k]) | f2), (q($h | .[$k]; $t | .[$k]) | f2),
		 (q($t | .[$cpu]; $f | .[$cpu]) | f2), (q($t | .[$cpu]; $h | .[$cpu]) | f2)] | @tsv;
	(["figure", "seva-f32", "seva-bf16", "transformers", "f32/tf", "bf16/tf", "f32/tf-cpu", "bf16/tf-cpu"] | @tsv),
	(pick($s; "image_encode"; null; "f32") as $f | pick($s; "image_encode"; null; "bf16") as $h |
	 pick($p; "image_encode"; null; null) as $t |
	 ["image encode, images/s", ($f | 1 / .s_per_image | f2), ($h | 1 / .s_per_image | f2),
	  ($t | 1 / .s_per_image | f2), (q($t.s_per_image; $f.s_per_image) | f2),
	  (q($t.s_per_image; $h.s_per_image) | f2), (q($t.cpu_s_per_image; $f.cpu_s_per_image) | f2),
	  (q($t.cpu_s_per_image; $h.cpu_s_per_image) | f2)] | @tsv),
	row("generation b1, tok/s"; "tokens_per_s"; "cpu_s"; "generate_kvcache"; 1),
	row("generation b8, tok/s"; "tokens_per_s"; "cpu_s"; "generate_kvcache"; 8),
	row("DPO step, ref once, pairs/s"; "pairs_per_s"; "cpu_s_per_step"; "dpo_step_ref_precomputed"; null),
	(pick($s; "dpo_step"; null; "f32") as $f | pick($s; "dpo_step"; null; "bf16") as $h |
	 ["DPO step with the ref pass, pairs/s", ($f.pairs_per_s | f2), ($h.pairs_per_s | f2), "-", "-", "-", "-", "-"] | @tsv),
	(pick($s; "dpo_step_cached"; null; "f32") as $f | pick($s; "dpo_step_cached"; null; "bf16") as $h |
	 ["DPO step with the ref pass, --features, pairs/s", ($f.pairs_per_s | f2), ($h.pairs_per_s | f2), "-", "-", "-", "-", "-"] | @tsv),
	(["CPU s per step: ref pass / --features", (pick($s; "dpo_step"; null; "f32").cpu_s_per_step | f2),
	  (pick($s; "dpo_step"; null; "bf16").cpu_s_per_step | f2), "-", "-", "-", "-", "-"] | @tsv),
	(["", (pick($s; "dpo_step_cached"; null; "f32").cpu_s_per_step | f2),
	  (pick($s; "dpo_step_cached"; null; "bf16").cpu_s_per_step | f2), "-", "-", "-", "-", "-"] | @tsv)
' <(jq -c 'select(.config) | . + {src: "seva"} |
	# engine rounds pairs/s to 2 decimals: too coarse for this model
	if .s_per_step then .pairs_per_s = .batch / .s_per_step else . end' "$tmp/seva.json"
    jq -c '. + {src: "peer"}' "$tmp/peer.json") |
	column -t -s "$(printf '\t')"
echo
echo "per wall second at the load above; the -cpu ratios: CPU seconds per unit of work,"
echo "the peer's over seva's (each process, all threads). The peer's DPO step computes"
echo "the logits of every position, as a transformers or TRL forward does."

echo
echo "== projection: SeVa on $N samples (both views generated + one DPO epoch)"
for p in f32 bf16; do
	jq -rs --argjson n "$N" --arg p "$p" '
		def h: . / 3600 * 100 | round / 100;
		map(select(.precision == $p and .config)) |
		(map(select(.what == "generate_kvcache" and .batch == 8)) | .[0]) as $g |
		(map(select(.what == "dpo_step")) | .[0]) as $d |
		(map(select(.what == "image_encode")) | .[0]) as $e |
		select($g and $d and $e) |
		(2 * $n * $g.s / $g.batch) as $gw | (2 * $n * $g.cpu_s / $g.batch / 2) as $gc |
		($n / $d.batch * $d.s_per_step) as $dw | ($n / $d.batch * $d.cpu_s_per_step / 2) as $dc |
		# the tower: one pass per view generated, then one per pair for the
		# reference and one for the policy
		(4 * $n * $e.s_per_image) as $vw | (4 * $n * $e.cpu_s_per_image / 2) as $vc |
		"seva \($p): generation \($gw | h) h, DPO epoch \($dw | h) h, total \(($gw + $dw) | h) h wall; " +
		"per CPU second on 2 cores: \($gc | h) + \($dc | h) = \(($gc + $dc) | h) h, of which the " +
		"vision tower \($vc | h) h (\(100 * $vc / ($gc + $dc) | round) %; 4 passes per sample)"
	' "$tmp/seva.json"
	jq -rs --argjson n "$N" --arg p "$p" '
		def h: . / 3600 * 100 | round / 100;
		map(select(.precision == $p and .config)) |
		(map(select(.what == "generate_kvcache" and .batch == 8)) | .[0]) as $g |
		(map(select(.what == "dpo_step_cached")) | .[0]) as $d |
		(map(select(.what == "image_encode")) | .[0]) as $e |
		(map(select(.what == "featcache")) | .[0]) as $c |
		select($g and $d and $e and $c) |
		(2 * $n * $g.s / $g.batch) as $gw | (2 * $n * $g.cpu_s / $g.batch / 2) as $gc |
		($n / $d.batch * $d.s_per_step) as $dw | ($n / $d.batch * $d.cpu_s_per_step / 2) as $dc |
		(2 * $n * $e.cpu_s_per_image / 2) as $vc |
		"seva \($p) --features: generation \($gw | h) h, DPO epoch \($dw | h) h, total \(($gw + $dw) | h) h wall; " +
		"per CPU second on 2 cores: \($gc | h) + \($dc | h) = \(($gc + $dc) | h) h, of which the " +
		"vision tower \($vc | h) h (\(100 * $vc / ($gc + $dc) | round) %; 2 passes per sample); " +
		"the cache: \($n * $c.bytes_per_image / 1e9 * 100 | round / 100) GB in \($c.dtype)"
	' "$tmp/seva.json"
done
echo "goal: 8 h on 2 cores."
echo "raw:"
cat "$tmp/seva.json" "$tmp/peer.json"
