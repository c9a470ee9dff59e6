# dpo_trl_ref.py — makes dpo_trl_ref.h: TRL's own DPOTrainer._compute_loss
# (trl 1.16, float64) run on given summed log-probs, for every loss type
# TRL and seva share, alone and combined with loss_weights; the loss, the
# gradient with respect to each answer's summed log-prob (autograd) and the
# logged rewards. test_train checks seva's dpo_batch_loss against it; t9010
# regenerates it with the venv and checks that it is current.
# Run: tests/vendor/venv/bin/python tests/unit/dpo_trl_ref.py > tests/unit/dpo_trl_ref.h
#
# The trainer is not built (that needs a model and a data set): the method
# runs on a stand-in `self` holding the attributes it reads, and a stand-in
# model whose per-token log-probs are the leaf tensor we differentiate.
# Each answer's log-prob is spread evenly over its completion tokens, so
# the tokens sum to it and the gradient at any of its tokens is the
# gradient with respect to the sum.
import sys
from collections import defaultdict
from types import SimpleNamespace

import torch
import trl
from trl.trainer.dpo_trainer import DPOTrainer

torch.set_default_dtype(torch.float64)

# pc, pr, rc, rr, nc, nr (nc, nr: completion tokens)
PAIRS = [
    (-12.5, -14.25, -13.0, -13.5, 5, 7),
    (-3.0, -9.0, -4.0, -2.0, 3, 4),
    (-7.0, -6.0, -6.5, -6.8, 6, 2),
]
L = 9  # sequence length; completion at the end, prompt before it
CASES = [  # (loss_type, loss_weights, beta, label_smoothing)
    (["sigmoid"], None, 0.1, 0.0),
    (["hinge"], None, 0.1, 0.0),
    (["ipo"], None, 0.1, 0.0),
    (["exo_pair"], None, 0.1, 0.2),
    (["nca_pair"], None, 0.1, 0.0),
    (["robust"], None, 0.1, 0.2),
    (["bco_pair"], None, 0.1, 0.0),
    (["sppo_hard"], None, 0.1, 0.0),
    (["aot"], None, 0.1, 0.2),
    (["aot_unpaired"], None, 0.1, 0.2),
    (["apo_zero"], None, 0.1, 0.0),
    (["apo_down"], None, 0.1, 0.0),
    (["sft"], None, 0.1, 0.0),
    (["sigmoid_norm"], None, 0.1, 0.0),
    (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], 0.1, 0.0),
    (["robust", "aot", "apo_zero", "sigmoid_norm"], [1.0, 0.5, 2.0, 0.25], 0.3, 0.1),
]


class Model:
    def __init__(self, log_probs):
        self.log_probs = log_probs

    def __call__(self, **kw):
        B, T = self.log_probs.shape
        return SimpleNamespace(log_probs=self.log_probs, entropy=torch.zeros(B, T),
                               mean_logits=torch.zeros(B, T),
                               is_top1=torch.zeros(B, T, dtype=torch.bool))


def run(loss_type, weights, beta, ls):
    k = len(PAIRS)
    mask = torch.zeros(2 * k, L, dtype=torch.long)
    lp = torch.zeros(2 * k, L - 1)
    for i, (pc, pr, rc, rr, nc, nr) in enumerate(PAIRS):
        for row, (v, n) in ((i, (pc, nc)), (k + i, (pr, nr))):
            mask[row, L - n:] = 1
            lp[row, L - 1 - n:] = v / n  # shifted: token t is predicted at t - 1
    lp.requires_grad_(True)
    acc = SimpleNamespace(device="cpu", gather=lambda t: t, gather_for_metrics=lambda t: t)
    me = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=acc,
                         aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
                         f_divergence_type="reverse_kl", loss_types=loss_type,
                         loss_weights=weights or [1.0] * len(loss_type), beta=beta,
                         label_smoothing=ls, use_weighting=False,
                         _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                         _total_train_tokens=0, _tp_size=1,
                         args=SimpleNamespace(discopop_tau=0.05))
    inputs = {
        "input_ids": torch.ones(2 * k, L, dtype=torch.long),
        "attention_mask": torch.ones(2 * k, L, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": torch.tensor([p[2] for p in PAIRS]),
        "ref_rejected_logps": torch.tensor([p[3] for p in PAIRS]),
    }
    loss = DPOTrainer._compute_loss(me, Model(lp), inputs, False)
    loss.backward()
    g = lp.grad
    grads = [g[i, L - 2].item() for i in range(k)] + [g[k + i, L - 2].item() for i in range(k)]
    m = me._metrics["train"]
    return loss.item(), grads, [m[n][0] for n in ("rewards/chosen", "rewards/rejected",
                                                 "rewards/accuracies", "rewards/margins")]


print("/* made by dpo_trl_ref.py with trl %s, torch %s; do not edit */" % (trl.__version__,
                                                                       torch.__version__))
print("static const double trl_pairs[%d][6] = {" % len(PAIRS))
for p in PAIRS:
    print("\t{ %s }," % ", ".join("%.17g" % x for x in p))
print("};")
print("static const struct {\n\tconst char *loss;\n\tdouble beta, label_smoothing, value;\n"
      "\tdouble grad[%d]; /* d loss / d pc_i, then d pr_i */\n"
      "\tdouble rewards[4]; /* chosen, rejected, accuracies, margins */\n} trl_cases[] = {"
      % (2 * len(PAIRS)))
for lt, w, beta, ls in CASES:
    v, g, r = run(lt, w, beta, ls)
    spec = ",".join(t if w is None else "%s:%g" % (t, x) for t, x in zip(lt, w or lt))
    print('\t{ "%s", %.17g, %.17g, %.17g,\n\t  { %s },\n\t  { %s } },' %
          (spec, beta, ls, v, ", ".join("%.17g" % x for x in g), ", ".join("%.17g" % x for x in r)))
print("};")
