# build.bash — sourced by the tests/bench/*.sh scripts (not a benchmark:
# bench.sh runs only *.sh). bench_build NAME... makes libseva.a, then
# tests/bin/bench-NAME from tests/bench/NAME.c where it is older than
# either, with the Makefile's own compiler and flags (MPI and all),
# whatever they are today. Returns 1 if a build fails.
bench_build() {
	make -s common/libseva.a || return 1
	local mkvar='print-%: ; @echo $($*)' CC CFLAGS SEVA_CFLAGS LIBS p
	CC=$(make -s --no-print-directory -f Makefile -f - print-CC <<<"$mkvar")
	CFLAGS=$(make -s --no-print-directory -f Makefile -f - print-CFLAGS <<<"$mkvar")
	SEVA_CFLAGS=$(make -s --no-print-directory -f Makefile -f - print-SEVA_CFLAGS <<<"$mkvar")
	LIBS=$(make -s --no-print-directory -f Makefile -f - print-LDLIBS <<<"$mkvar")
	mkdir -p tests/bin
	for p in "$@"; do
		if [ ! tests/bin/bench-$p -nt tests/bench/$p.c ] || [ ! tests/bin/bench-$p -nt common/libseva.a ]; then
			$CC $CFLAGS $SEVA_CFLAGS -o tests/bin/bench-$p tests/bench/$p.c common/libseva.a $LIBS || return 1
		fi
	done
}
