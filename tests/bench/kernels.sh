#!/bin/bash
# kernels.sh — the machine's sgemm ceiling (2048^3, 2 threads) with the
# OpenBLAS core it picks by itself and with the one tensor_blas_setup
# selects (ISSUE 7: Debian's 0.3.21 may not know a new CPU and fall back to
# slow generic kernels). Builds tests/bin/bench-sgemm, which the other
# benchmark scripts reuse: `tests/bin/bench-sgemm --value` prints the ceiling.
cd "$(dirname "$0")/../.." || exit 1
. tests/bench/build.bash
bench_build sgemm || exit 1
n=${SGEMM_N:-2048}
echo "default: $(tests/bin/bench-sgemm --default -n "$n" -j 2)"
echo "seva:    $(tests/bin/bench-sgemm -n "$n" -j 2)"
# The kernel sets this CPU can run, for the record (each a fresh process);
# Prescott is what OpenBLAS falls back to on a CPU it does not know.
for core in Prescott Haswell SkylakeX; do
	case $core in
	SkylakeX) grep -qw avx512f /proc/cpuinfo || continue ;;
	Haswell) grep -qw avx2 /proc/cpuinfo || continue ;;
	esac
	echo "forced:  $(OPENBLAS_CORETYPE=$core tests/bin/bench-sgemm -n "$n" -j 2)"
done
# The restart itself, on a pretended unknown CPU (OpenBLAS would say Prescott).
echo "restart: $(SEVA_BLAS_TEST_CORENAME=Prescott tests/bin/bench-sgemm -n "$n" -j 2)"
# Each kernel on the shapes of a DPO step on small.json.
if [ ! tests/bin/bench-kernels -nt tests/bench/kernels.c ] || [ ! tests/bin/bench-kernels -nt common/libseva.a ]; then
	$CC $CFLAGS $SEVA_CFLAGS -o tests/bin/bench-kernels tests/bench/kernels.c common/libseva.a $LIBS || exit 1
fi
tests/bin/bench-kernels -j 2
