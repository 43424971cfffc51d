# libsafetensors and the `safetensors` CLI.
#   make            build/libsafetensors.{a,so} and build/safetensors
#   make test       every test, normal build then ASan+UBSan build
#   make demo       install missing dependencies (as root), build, run on the sample
#   make bench      benchmarks (inputs are generated under build/bench)
#   make fuzz       each libFuzzer target for FUZZ_SECONDS
#   make valgrind   every C test binary under valgrind (minutes)
#   make install    PREFIX=/usr/local DESTDIR=
#   make python     the Python package in BUILD/python (PYTHONPATH=BUILD/python);
#                   part of `make` when the Python headers are installed

CC      ?= cc
PREFIX  ?= /usr/local
BUILD   ?= build
SAN     ?=
VERSION := 0.1.0
SONAME  := libsafetensors.so.0

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wformat=2 -Wvla
CPPFLAGS += -Iinclude -Ilib -D_GNU_SOURCE
CFLAGS   ?= -O2 -g
# -ffp-contract=off: no fused multiply-add even when -march allows it (the
# GGUF quantizers must round each operation as ggml's reference does).
CFLAGS   += -std=c11 -fPIC -fvisibility=hidden -pthread -ffp-contract=off $(WARN)
LDLIBS   := -lcrypto -lz -llapacke -lopenblas -lpthread -lm

ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC  := $(sort $(wildcard lib/*/*.c))
PROG_SRC := $(sort $(wildcard programs/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
PROG_OBJ := $(PROG_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
DEPS     := $(LIB_OBJ:.o=.d) $(PROG_OBJ:.o=.d) $(TEST_BIN:%=%.d) $(BUILD)/obj/python/_safetensors_c.d

# The Python extension (python/): built against the static library.
PYTHON  ?= /usr/bin/python3
PY_INC  := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
PY_EXT  := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
HAVE_PY := $(if $(PY_EXT),$(wildcard $(PY_INC)/Python.h))
PY_PKG  := $(BUILD)/python/safetensors_c
PY_SRC  := $(sort $(wildcard python/safetensors_c/*.py))
PY_MOD  := $(PY_PKG)/_safetensors_c$(PY_EXT)
# A sanitized extension is loaded into an unsanitized interpreter: clang's
# runtime then comes from LD_PRELOAD (tests/python_test.sh), not the link.
PY_LDFLAGS := $(if $(and $(filter 1,$(SAN)),$(findstring clang,$(CC))),-shared-libasan)

.PHONY: all lib cli tests test test-fast demo bench fuzz valgrind install uninstall clean deps python
all: lib cli $(if $(HAVE_PY),python)

python: $(PY_MOD) $(PY_SRC:python/safetensors_c/%=$(PY_PKG)/%)

$(BUILD)/obj/python/%.o: python/src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -isystem $(PY_INC) $(CFLAGS) -MMD -MP -c $< -o $@

$(PY_MOD): $(BUILD)/obj/python/_safetensors_c.o $(BUILD)/libsafetensors.a
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) $(PY_LDFLAGS) -o $@ $< $(BUILD)/libsafetensors.a $(LDLIBS)

$(PY_PKG)/%.py: python/safetensors_c/%.py
	@mkdir -p $(dir $@)
	cp $< $@

lib: $(BUILD)/libsafetensors.a $(BUILD)/libsafetensors.so
cli: $(BUILD)/safetensors
tests: all $(TEST_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libsafetensors.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/libsafetensors.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/safetensors: $(PROG_OBJ) $(BUILD)/libsafetensors.a
	$(CC) $(LDFLAGS) -o $@ $(PROG_OBJ) $(BUILD)/libsafetensors.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libsafetensors.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests $(CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $< $(BUILD)/libsafetensors.a $(LDLIBS)

# The whole suite twice: as built, then under AddressSanitizer + UBSan (clang).
# tests/run.sh prints the last line, "N passed, N failed".
test:
	@bash tests/run.sh

# One build's suite only (BUILD/SAN as given).
test-fast: tests
	@bash tests/run-suite.sh $(BUILD)

demo:
	@bash scripts/deps.sh --if-root
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh $(BUILD)/safetensors

bench: all
	@bash bench/run.sh $(BUILD)

FUZZ_SECONDS ?= 20
fuzz:
	@bash fuzz/run.sh $(FUZZ_SECONDS)

valgrind:
	@bash tests/valgrind.sh $(BUILD)

deps:
	@bash scripts/deps.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(BUILD)/libsafetensors.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libsafetensors.so $(DESTDIR)$(PREFIX)/lib/libsafetensors.so.$(VERSION)
	ln -sf libsafetensors.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libsafetensors.so
	install -m 644 include/safetensors.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(BUILD)/safetensors $(DESTDIR)$(PREFIX)/bin/
	install -m 644 doc/safetensors.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' doc/safetensors.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/safetensors.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libsafetensors.a $(DESTDIR)$(PREFIX)/lib/libsafetensors.so* \
	    $(DESTDIR)$(PREFIX)/include/safetensors.h $(DESTDIR)$(PREFIX)/bin/safetensors \
	    $(DESTDIR)$(PREFIX)/share/man/man1/safetensors.1 $(DESTDIR)$(PREFIX)/lib/pkgconfig/safetensors.pc

clean:
	rm -rf build

-include $(DEPS)
