# imapidled: GNU make. `make` builds ./imapidled; `make check` runs every test;
# `make demo` shows it work against a throwaway Dovecot. SANITIZE=1: ASan+UBSan; WERROR=1.

VERSION := 0.1.0

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/imapidled
DESTDIR ?=

CC ?= cc
CLANG ?= clang
PKG_CONFIG ?= pkg-config
PYTHON ?= /usr/bin/python3
PKGS := openssl libcurl libsystemd libcares inih jansson

# Unit directories from systemd's own pkg-config file, rebased onto PREFIX. Debian derives the
# system unit directory from an empty root prefix (/lib/systemd/system), so that is rebased
# too: PREFIX=/usr/local installs into /usr/local/lib/systemd/{system,user}.
SYSTEMD_PC = $(PKG_CONFIG) --define-variable=prefix=$(PREFIX) --define-variable=rootprefix=$(PREFIX)
SYSTEMD_USER_UNITDIR ?= $(shell $(SYSTEMD_PC) --variable=systemduserunitdir systemd 2>/dev/null \
	|| echo $(PREFIX)/lib/systemd/user)
SYSTEMD_SYSTEM_UNITDIR ?= $(shell $(SYSTEMD_PC) --variable=systemdsystemunitdir systemd \
	2>/dev/null || echo $(PREFIX)/lib/systemd/system)

CFLAGS ?= -O2 -g
WARNINGS := -Wall -Wextra -Wno-unused-parameter -Wmissing-prototypes -Wstrict-prototypes \
	-Wvla -Wimplicit-fallthrough -Wshadow -Wformat=2 -Wundef -Wpointer-arith \
	-Wno-missing-field-initializers
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif

ifeq ($(SANITIZE),1)
VARIANT := san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
VARIANT := default
SANFLAGS :=
endif
BUILD := build/$(VARIANT)

DEP_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS))
DEP_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS))
ALL_CFLAGS = -std=gnu17 -D_GNU_SOURCE -DVERSION='"$(VERSION)"' -Iinclude $(WARNINGS) \
	$(CFLAGS) $(SANFLAGS) $(DEP_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

SRC := $(sort $(shell find src -name '*.c'))
LIB_SRC := $(filter-out src/main.c,$(SRC))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test-*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz-*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_REPLAY := $(FUZZ_NAMES:%=$(BUILD)/tests/%-replay)

.PHONY: all check check-unit check-fuzz-corpus check-integration demo fuzz install uninstall \
	clean deps imapidled bench
.DEFAULT_GOAL := all

all: imapidled

# Rebuild everything when the flags change (switching SANITIZE, WERROR, CFLAGS).
$(BUILD)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS)' | cmp -s - $@ || \
		echo '$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS)' > $@
FORCE:

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/libimapidled.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/imapidled: $(BUILD)/src/main.o $(BUILD)/libimapidled.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

# The binary at the top of the tree is always the last variant built.
imapidled: $(BUILD)/imapidled
	@cmp -s $< $@ || cp $< $@

# Unit tests: cmocka, one binary per module, linked against the library and the helpers the
# tests share (tests/unit/helpers.h), which are no test themselves.
CMOCKA_CFLAGS = $(shell $(PKG_CONFIG) --cflags cmocka)
UNIT_HELPERS := $(BUILD)/tests/unit/helpers.o

$(UNIT_HELPERS): tests/unit/helpers.c $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(CMOCKA_CFLAGS) -c -o $@ $<

$(BUILD)/tests/test-%: tests/unit/test-%.c $(UNIT_HELPERS) $(BUILD)/libimapidled.a $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(CMOCKA_CFLAGS) -o $@ $< $(UNIT_HELPERS) \
		$(BUILD)/libimapidled.a $(ALL_LDFLAGS) $(DEP_LIBS) $(shell $(PKG_CONFIG) --libs cmocka)

# Fuzz targets also build without libFuzzer, as a replay of their corpus (part of check).
$(BUILD)/tests/%-replay: tests/fuzz/%.c tests/fuzz/replay-main.c $(BUILD)/libimapidled.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< tests/fuzz/replay-main.c $(BUILD)/libimapidled.a \
		$(ALL_LDFLAGS) $(DEP_LIBS)

deps:
	@scripts/deps

check:
	@scripts/deps
	@$(MAKE) --no-print-directory check-unit check-fuzz-corpus
	@$(MAKE) --no-print-directory check-integration

check-unit: $(UNIT_BIN)
	@scripts/run-unit-tests $(UNIT_BIN)

check-fuzz-corpus: $(FUZZ_REPLAY)
	@for f in $(FUZZ_NAMES); do \
		$(BUILD)/tests/$$f-replay tests/fuzz/corpus/$$f || exit 1; \
	done

check-integration: imapidled
	IMAPIDLED_BIN=$(abspath imapidled) $(PYTHON) -m pytest -q -ra tests/integration $(PYTEST_ARGS)

demo:
	@scripts/deps
	@$(MAKE) --no-print-directory imapidled
	@$(PYTHON) scripts/demo.py

# Benchmarks (bench/README.md): figures, never a gate. ARGS=--quick for the short run; a
# full run writes its table into BENCHMARKS.md (between the bench:results markers).
bench:
	@scripts/deps
	@$(MAKE) --no-print-directory imapidled
	@$(PYTHON) bench/run $(ARGS)

# libFuzzer: each target runs FUZZ_SECONDS on its corpus (new finds go to build/fuzz/).
FUZZ_SECONDS ?= 30
FUZZ_BUILD := build/fuzz
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CLANG) -std=gnu17 -D_GNU_SOURCE -DVERSION='"$(VERSION)"' -Iinclude $(FUZZ_FLAGS) \
		$(DEP_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/fuzz-%: tests/fuzz/fuzz-%.c $(FUZZ_OBJ)
	$(CLANG) -std=gnu17 -D_GNU_SOURCE -Iinclude -g -O1 \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -o $@ $^ $(DEP_LIBS)

fuzz: $(FUZZ_NAMES:%=$(FUZZ_BUILD)/%)
	@scripts/deps
	@for f in $(FUZZ_NAMES); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$f; \
		echo "== $$f ($(FUZZ_SECONDS) s)"; \
		$(FUZZ_BUILD)/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			$(FUZZ_BUILD)/corpus/$$f tests/fuzz/corpus/$$f || exit 1; \
	done

install: imapidled
	install -Dm755 imapidled $(DESTDIR)$(BINDIR)/imapidled
	install -Dm644 units/imapidled.service $(DESTDIR)$(SYSTEMD_USER_UNITDIR)/imapidled.service
	install -Dm644 units/imapidled@.service $(DESTDIR)$(SYSTEMD_USER_UNITDIR)/imapidled@.service
	install -Dm644 units/imapidled-system.service \
		$(DESTDIR)$(SYSTEMD_SYSTEM_UNITDIR)/imapidled.service
	install -Dm644 man/imapidled.1 $(DESTDIR)$(MANDIR)/man1/imapidled.1
	install -Dm644 man/imapidled.conf.5 $(DESTDIR)$(MANDIR)/man5/imapidled.conf.5
	install -Dm644 config.example $(DESTDIR)$(DOCDIR)/config.example
	@sed -i 's|@BINDIR@|$(BINDIR)|g' $(DESTDIR)$(SYSTEMD_USER_UNITDIR)/imapidled.service \
		$(DESTDIR)$(SYSTEMD_USER_UNITDIR)/imapidled@.service \
		$(DESTDIR)$(SYSTEMD_SYSTEM_UNITDIR)/imapidled.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/imapidled \
		$(DESTDIR)$(SYSTEMD_USER_UNITDIR)/imapidled.service \
		$(DESTDIR)$(SYSTEMD_USER_UNITDIR)/imapidled@.service \
		$(DESTDIR)$(SYSTEMD_SYSTEM_UNITDIR)/imapidled.service \
		$(DESTDIR)$(MANDIR)/man1/imapidled.1 $(DESTDIR)$(MANDIR)/man5/imapidled.conf.5 \
		$(DESTDIR)$(DOCDIR)/config.example
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

clean:
	rm -rf build imapidled

-include $(shell find build -name '*.d' 2>/dev/null)
