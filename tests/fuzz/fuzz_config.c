/* fuzz_config — libFuzzer harness for a model directory's JSON settings:
 * the input is config.json, then after a line "#PRE#"
 * preprocessor_config.json, then after "#PROC#" processor_config.json. */
#include "fuzz.h"
#include "image.h"
#include "vlm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *pre, *proc;
	size_t npre, nproc;
	size_t ncfg = fuzz_split(data, size, "\n#PRE#\n", &pre, &npre);
	if (pre)
		npre = fuzz_split(pre, npre, "\n#PROC#\n", &proc, &nproc);
	else
		ncfg = fuzz_split(data, size, "\n#PROC#\n", &proc, &nproc);
	const char *cfgp = fuzz_put("config.json", data, ncfg);
	const char *prep = pre ? fuzz_put("preprocessor_config.json", pre, npre) : NULL;
	const char *procp = proc ? fuzz_put("processor_config.json", proc, nproc) : NULL;
	if (!prep)
		fuzz_rm("preprocessor_config.json");
	if (!procp)
		fuzz_rm("processor_config.json");
	struct vlm_config cfg;
	if (vlm_config_load(&cfg, cfgp) == 0) {
		struct preprocess p;
		if (prep)
			vlm_preprocess_load(&p, prep, &cfg);
		if (procp)
			vlm_processor_check(procp, &cfg);
	}
	return 0;
}
