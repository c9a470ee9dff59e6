/* fuzz_safetensors — libFuzzer harness for the safetensors reader: the
 * header, the layout rules and the conversion of every tensor to f32. */
#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct safetensors st;
	const char *p = fuzz_put("model.safetensors", data, size);
	if (safetensors_open(&st, p) == 0) {
		for (int i = 0; i < st.ntensors; i++) {
			const struct safetensors_tensor *t = &st.tensors[i];
			if (t->numel > (1 << 20))
				continue;
			float *out = xmalloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
			safetensors_read_f32(t, out, NULL, 0);
			free(out);
			if (safetensors_find(&st, t->name) != t)
				abort();
		}
		safetensors_release(&st);
	}
	return 0;
}
