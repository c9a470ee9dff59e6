# tensor_ref.py — makes tensor_ref.h, torch 1.13 outputs on deterministic inputs
# (x_i = sin(0.37 i + phase)), so the kernels' conventions (HF rope half-split,
# GQA, causal mask, erf GELU, layer_norm, log_softmax) are checked against
# an independent implementation.
# Run: /usr/bin/python3 tests/unit/tensor_ref.py > tests/unit/tensor_ref.h
import math, torch
import torch.nn.functional as F
def seq(n, ph): return torch.tensor([math.sin(0.37*i+ph) for i in range(n)], dtype=torch.float32)
def emit(name, t):
    v = t.detach().reshape(-1).tolist()
    s = ",".join("%.9g" % x for x in v)
    print("static const float %s[%d] = {%s};" % (name, len(v), s))
print("/* made by tensor_ref.py with torch %s; do not edit */" % torch.__version__)
# rope: x (N=3, NH=2, HS=8) at positions 0, 5, 17, theta 10000 (HF LlamaRotaryEmbedding)
N, NH, HS, theta = 3, 2, 8, 10000.0
x = seq(N*NH*HS, 0.1).view(N, NH, HS)
pos = torch.tensor([0, 5, 17])
inv = 1.0 / (theta ** (torch.arange(0, HS, 2).float() / HS))
fr = pos.float()[:, None] * inv[None, :]
emb = torch.cat((fr, fr), -1)
cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
def rot_half(t): return torch.cat((-t[..., HS//2:], t[..., :HS//2]), -1)
emit("ref_rope", x*cos + rot_half(x)*sin)
# attention: B=1, T=5, NH=4, NKV=2, HS=4, causal, GQA (repeat_kv), and full with len 3
B, T, NH, NKV, HS = 1, 5, 4, 2, 4
q = seq(B*T*NH*HS, 0.2).view(B, T, NH, HS).transpose(1, 2)
k = seq(B*T*NKV*HS, 0.7).view(B, T, NKV, HS).transpose(1, 2)
v = seq(B*T*NKV*HS, 1.3).view(B, T, NKV, HS).transpose(1, 2)
k = k.repeat_interleave(NH//NKV, dim=1); v = v.repeat_interleave(NH//NKV, dim=1)
s = q @ k.transpose(-1, -2) / math.sqrt(HS)
mask = torch.ones(T, T).tril().bool()
o = F.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v
emit("ref_att_causal", o.transpose(1, 2))
L = 3
o = F.softmax(s[..., :L, :L], -1) @ v[..., :L, :]
emit("ref_att_full3", o.transpose(1, 2))
# norms: (N=3, C=7)
xn = seq(21, 0.4).view(3, 7) * 3 + 0.5
w = seq(7, 2.0); b = seq(7, 2.5)
emit("ref_layernorm", F.layer_norm(xn, (7,), w, b, 1e-5))
emit("ref_rmsnorm", w * (xn * torch.rsqrt(xn.pow(2).mean(-1, keepdim=True) + 1e-5)))
# activations on 9 values in [-4, 4]
xa = seq(9, 0.9) * 4
emit("ref_gelu", F.gelu(xa))
emit("ref_quick_gelu", xa * torch.sigmoid(1.702 * xa))
emit("ref_swiglu", F.silu(xa) * seq(9, 3.0))
# log_softmax gathered: logits (3, 11), targets 4, 0, 10
lg = seq(33, 1.1).view(3, 11) * 5
emit("ref_logprob", F.log_softmax(lg, -1).gather(1, torch.tensor([[4], [0], [10]])))
