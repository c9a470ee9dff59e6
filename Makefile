# seva — build every tool into bin/, one static library from common/.
# Flags come from pkg-config; `make deps` installs what Debian 12 lacks.

PREFIX  ?= /usr/local
BINDIR   = $(PREFIX)/bin
MANDIR   = $(PREFIX)/share/man
DESTDIR ?=

PKGS     = libarchive msgpack openblas libcjson libpcre2-8 libutf8proc libjpeg libpng zlib
CC      ?= cc
OPT     ?= -O2 -march=x86-64-v2 -mtune=native
CFLAGS  ?= $(OPT) -g
SEVA_CFLAGS = -std=c11 -Wall -Wextra -D_GNU_SOURCE -fopenmp -Icommon \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread -fopenmp

# MPI for data-parallel training (common/dist.c): on when mpicc is found,
# MPI=1 forces it, MPI=0 leaves it out. Flags from pkg-config (OpenMPI's
# ompi-c, or mpich), else the compiler becomes mpicc. bin/.mpi
# remembers the choice, so switching it rebuilds dist.o and relinks.
MPI     ?= $(if $(shell command -v mpicc 2>/dev/null),1,0)
ifeq ($(MPI),1)
MPI_PC  := $(firstword $(foreach p,ompi-c mpich,$(shell pkg-config --exists $(p) 2>/dev/null && echo $(p))))
SEVA_CFLAGS += -DSEVA_MPI
ifneq ($(MPI_PC),)
SEVA_CFLAGS += $(shell pkg-config --cflags $(MPI_PC))
LDLIBS  += -Wl,--as-needed $(shell pkg-config --libs $(MPI_PC)) -Wl,--no-as-needed
else
CC       = mpicc
endif
endif
$(shell mkdir -p bin; [ "$$(cat bin/.mpi 2>/dev/null)" = "$(MPI)" ] || echo "$(MPI)" >bin/.mpi)

# oneDNN for the bf16 products (common/tensor.c): on when its header is
# found, DNNL=1 forces it, DNNL=0 leaves it out (then --precision bf16
# says it is not built in). bin/.dnnl remembers the choice as bin/.mpi does.
DNNL    ?= $(if $(wildcard /usr/include/oneapi/dnnl/dnnl.h),1,0)
ifeq ($(DNNL),1)
SEVA_CFLAGS += -DSEVA_DNNL
LDLIBS  += -ldnnl
endif
$(shell [ "$$(cat bin/.dnnl 2>/dev/null)" = "$(DNNL)" ] || echo "$(DNNL)" >bin/.dnnl)

LIB_SRC  = $(sort $(wildcard common/*.c))
LIB_OBJ  = $(LIB_SRC:.c=.o)
CMD_SRC  = $(sort $(wildcard cmd/seva-*.c))
TOOLS    = $(patsubst cmd/%.c,bin/%,$(CMD_SRC))
UNIT_SRC = $(sort $(wildcard tests/unit/test_*.c))
UNITS    = $(patsubst tests/unit/%.c,tests/bin/%,$(UNIT_SRC))
MANS     = $(sort $(wildcard man/*.[1-9]))

all: $(TOOLS) $(UNITS)

common/%.o: common/%.c $(wildcard common/*.h)
	$(CC) $(CFLAGS) $(SEVA_CFLAGS) -c -o $@ $<

common/dist.o: bin/.mpi

# The release, in one place: the file VERSION (seva_version, --version,
# training_args.json).
common/util.o: VERSION
common/util.o: SEVA_CFLAGS += -DSEVA_VERSION='"$(shell cat VERSION)"'
common/tensor.o: bin/.dnnl

common/libseva.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# --help lists the options with their defaults from the one place they are
# written, the man page: its OPTIONS section, rendered by mandoc (bold and
# underline overstrikes removed) into a string that the tool links.
bin/help/%.c: man/%.1
	@mkdir -p bin/help
	mandoc -Tutf8 -Owidth=80 $< | perl -CS -pe 's/.\x08//g' \
	  | awk '/^OPTIONS$$/ { f = 1; next } /^[A-Z][A-Z ]*$$/ { f = 0 } f' \
	  | perl -pe 'BEGIN { print "const char help_options_text[] =\n" } \
	      s/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$$/\\n"/; END { print ";\n" }' >$@.tmp
	mv $@.tmp $@

bin/%: cmd/%.c common/libseva.a bin/help/%.c
	@mkdir -p bin
	$(CC) $(CFLAGS) $(SEVA_CFLAGS) -o $@ $< bin/help/$*.c common/libseva.a $(LDLIBS)

tests/bin/%: tests/unit/%.c tests/unit/tap.h tests/unit/testutil.h common/libseva.a
	@mkdir -p tests/bin
	$(CC) $(CFLAGS) $(SEVA_CFLAGS) -Itests/unit -o $@ $< common/libseva.a $(LDLIBS)

# The README's two commands. Both install missing Debian packages first
# (tests/deps.sh: a no-op when everything is there), then build.
# The main job: SeVa end to end on the embedded world, a before/after table.
seva: deps-run
	@$(MAKE) --no-print-directory $(TOOLS)
	pipelines/seva.sh -o runs/seva

# Every unit test and shell test, TAP, one summary line "N passed, N failed".
test: deps-ok
	@$(MAKE) --no-print-directory all
	@tests/run.sh

deps-ok:
	@tests/deps.sh -q

deps-run:
	@tests/deps.sh -q --run

bench: all
	@tests/bench.sh

lint:
	mandoc -Tlint -Wwarning $(MANS)
	@bash tests/t0100-man.sh

# The whole suite under AddressSanitizer and UBSan, leaks included, in a
# copy of the tree built apart (ASAN_DIR): every report goes to
# ASAN_DIR/reports and any report fails the target. About three times as
# slow as make test, so CI need not run it. MPI is left out: OpenMPI's own
# allocations would be the only leaks reported.
ASAN_DIR ?= build-asan
ASAN_CFLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
asan:
	@mkdir -p $(ASAN_DIR) && git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C $(ASAN_DIR)
	@rm -rf $(ASAN_DIR)/tests/vendor $(ASAN_DIR)/reports && mkdir -p $(ASAN_DIR)/reports && \
		ln -s $(CURDIR)/tests/vendor $(ASAN_DIR)/tests/vendor
	@$(MAKE) --no-print-directory -C $(ASAN_DIR) MPI=0 CFLAGS='$(ASAN_CFLAGS)' all
	@cd $(ASAN_DIR) && r=$$PWD/reports && \
		SEVA_SANITIZE=1 ASAN_OPTIONS=detect_leaks=1:log_path=$$r/asan \
		UBSAN_OPTIONS=print_stacktrace=1:log_path=$$r/ubsan tests/run.sh; rc=$$?; \
		n=$$(ls reports | wc -l); echo "$$n sanitizer reports in $(ASAN_DIR)/reports"; \
		for f in reports/*; do [ -e "$$f" ] && grep -m1 -h 'ERROR\|runtime error' "$$f"; done; \
		[ $$rc -eq 0 ] && [ $$n -eq 0 ]

# Every fuzz harness for FUZZ_TIME seconds (default 60) each.
fuzz: all
	$(MAKE) -C tests/fuzz run

print-ldlibs:
	@echo $(LDLIBS)

deps:
	@tests/deps.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -m 755 $(TOOLS) $(DESTDIR)$(BINDIR)
	for m in $(MANS); do s=$${m##*.}; install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s; done

clean:
	rm -rf bin tests/bin common/*.o common/libseva.a $(ASAN_DIR)
	-$(MAKE) -C tests/fuzz clean 2>/dev/null

PHONY_EXTRA = seva deps-ok print-ldlibs deps-run
.PHONY: $(PHONY_EXTRA) all test bench lint fuzz asan deps install clean
.SECONDARY: $(LIB_OBJ)
