/* vlm_impl — what vlm.c and decode.c share behind struct vlm's `impl`:
 * indices of the named tensors per layer, the LoRA views, the activation
 * arenas and the batched prefill forward. Private to the vlm module; tests
 * may use it to reach the logits. */
#ifndef SEVA_VLM_IMPL_H
#define SEVA_VLM_IMPL_H

#include "vlm.h"

/* Tensors of one ViT encoder layer (CLIP and SigLIP alike), in table order. */
enum {
	VL_LN1_W, VL_LN1_B, VL_Q_W, VL_Q_B, VL_K_W, VL_K_B, VL_V_W, VL_V_B,
	VL_O_W, VL_O_B, VL_LN2_W, VL_LN2_B, VL_FC1_W, VL_FC1_B, VL_FC2_W, VL_FC2_B,
	VL_N
};
/* Tensors of one LLaMA decoder layer, in table order. */
enum { DL_LN1, DL_Q, DL_K, DL_V, DL_O, DL_LN2, DL_GATE, DL_UP, DL_DOWN, DL_N };
/* LoRA target slots; LORA_* bit = 1 << slot. */
enum { LT_Q, LT_K, LT_V, LT_O, LT_GATE, LT_UP, LT_DOWN, LT_N };

/* Shapes of one forward (see vlm.c's header comment for the letters). */
struct vlm_shape {
	int NI, VT, VN, FT, IT, B, T, N, NR;
	int NU;                   /* distinct decoder rows: slots of a shared prefix once, no padding */
	int NQ;                   /* rows the head reads: all the last layer computes beyond k, v */
	int nv, nvres, nd, ndres; /* layer blocks held: all when kept, else 1 (2 residuals) */
	int r;                    /* LoRA rank in use, 0 if none or disabled */
	int gen;                  /* generation: NR = B last rows, no targets */
	int vkeep;                /* the vision tower's activations are kept */
	int vonly;                /* the vision tower only: no projector, no decoder */
	int drop;                 /* LoRA dropout on (a kept forward with drop_key) */
};

struct vlm_impl {
	/* indices into m->tensors */
	int patch, patch_b, cls, pos, pre_w, pre_b, post_w, post_b; /* -1: the tower has none */
	int conn[4];                   /* the connector's tensors, in its order */
	int embed, norm, lm_head;      /* lm_head == embed when tied */
	int *vl;                       /* (v_layers, VL_N) */
	int *vpos;                     /* (VT) the position embedding row of each tower row */
	int *dl;                       /* (L, DL_N) */
	int nbase;                     /* tensors before the LoRA ones */
	long nbase_params;             /* floats before the LoRA ones */
	int *la;                       /* (L, LT_N): index of lora_A (lora_B = +1), -1 if none */

	/* forward activations (floats and ints), grown on demand: [1] for
	 * forwards that keep them for backward, [0] for the others (so a
	 * reference forward between a kept forward and its backward is fine) */
	float *acts[2];
	size_t acts_cap[2];
	int *iacts[2];
	size_t iacts_cap[2];
	float *dacts;                  /* backward scratch */
	size_t dacts_cap;
	int kept;                      /* 1 if acts[1] holds a forward for backward */
	struct vlm_shape ks;           /* its shapes */

	/* forward products of fewer than 64 rows, padded (vlm.c's mm_fwd) */
	float *mmx;
	size_t mmx_cap;

	/* LoRA dropout of the kept forward: dkey (NU) each row's mask key
	 * (dropping: the kept forward drew masks); drop the dropped inputs
	 * (and in backward their gradient), 2 (NU, max in) */
	uint64_t *dkey;
	size_t dkey_cap;
	float *drop;
	size_t drop_cap;
	int dropping;

	/* decoding */
	float *kv;
	size_t kv_cap;
	float *dec;
	size_t dec_cap;
};

/* Options of the internal forward beyond vlm_forward's. */
struct vlm_fwd_opts {
	int keep;
	/* Prefill: every layer's k and v (after RoPE) of each valid slot are
	 * copied to kc/vc (L, B, S, NKV*HS) at slot t of sequence b. */
	float *kc, *vc;
	int S;
	/* Generation: if non-NULL, the logits (B, V) of each sequence's last
	 * row are copied here and logp is not computed. */
	float *last_logits;
	int *out_len;    /* (B) lengths after the image expansion, if non-NULL */
	int vision_only; /* stop after the vision tower (vlm_forward_features) */
};

int vlm_forward_ex(struct vlm *m, const struct vlm_batch *batch, float *logp,
		   const struct vlm_fwd_opts *o);

/* y (N,OUT) += scale * (x · Aᵀ) · Bᵀ for LoRA slot LT of decoder layer L,
 * if that adapter exists and is enabled; xa (N,r) receives scale·x·Aᵀ and
 * tmp (N,OUT) is scratch. */
void vlm_lora_apply(struct vlm *m, int l, int lt, float *y, const float *x, float *xa,
		    float *tmp, int N);

#endif
