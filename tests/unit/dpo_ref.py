# dpo_ref.py — the reference values of test_train's DPO table: every loss
# term of seva-dpo(1), written out from its formula in torch float64 on the
# three pairs of dpo_cases (β 0.1, ε 0.2, λ 50, δ 0), the mean over them.
# An independent transcription (torch's logsigmoid, sort, relu); the TRL
# terms are also checked against TRL's own code (dpo_trl_ref.py).
# Run: tests/vendor/venv/bin/python tests/unit/dpo_ref.py
import torch, torch.nn.functional as F
torch.set_default_dtype(torch.float64)
# pairs: pc, pr, rc, rr, nc, nr, pcm, rcm
P=[(-12.5,-14.25,-13.0,-13.5,5,7,-15.0,-14.0),(-3.0,-9.0,-4.0,-2.0,3,4,-2.5,-3.5),(-7.0,-6.0,-6.5,-6.8,6,2,-9.0,-7.2)]
b=0.1; eps=0.2
t=torch.tensor(P)
pc,pr,rc,rr,nc,nr,pcm,rcm=t.T
cl=pc-rc; rl=pr-rr; d=cl-rl
ls=F.logsigmoid; sg=torch.sigmoid
out={}
out['sigmoid']=(-(1-eps)*ls(b*d)-eps*ls(-b*d))
out['sigmoid_norm']=-ls(b*(cl/nc-rl/nr))
out['ipo']=(cl/nc-rl/nr-1/(2*b))**2
out['hinge']=torch.relu(1-b*d)
out['robust']=(-(1-eps)*ls(b*d)+eps*ls(-b*d))/(1-2*eps)
e=torch.tensor(eps)
out['exo_pair']=sg(b*d)*(ls(b*d)-torch.log1p(-e))+sg(-b*d)*(ls(-b*d)-torch.log(e))
out['nca_pair']=-ls(b*cl)-0.5*ls(-b*cl)-0.5*ls(-b*rl)
out['bco_pair']=-ls(b*cl)-ls(-b*rl)
out['sppo_hard']=(cl-0.5/b)**2+(rl+0.5/b)**2
a=torch.sort(pc-pr)[0]-torch.sort(rc-rr)[0]
out['aot']=-ls(b*a)*(1-eps)-ls(-b*a)*eps
a=torch.sort(cl)[0]-torch.sort(rl)[0]
out['aot_unpaired']=-ls(b*a)*(1-eps)-ls(-b*a)*eps
out['apo_zero']=1-sg(b*cl)+sg(b*rl)
out['apo_down']=sg(b*cl)+1-sg(b*d)
lam=50
out['dpop']=-ls(b*(d-lam*torch.clamp(rc-pc,min=0)))
out['sft']=(-pc.sum()/nc.sum()).expand(3)
out['mdpo_cond']=-ls(b*(cl-(pcm-rcm)))
out['mdpo_anchor']=-ls(b*cl-0)
for k,v in out.items(): print('\t{ "%s", %.17g },'%(k,v.mean().item()))
