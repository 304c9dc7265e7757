# lua-resty-passport: build, test, install.
# `make` builds the C core; `make test` runs every suite (see README).

CC ?= cc
PREFIX ?= /usr/local
LUA_VERSION ?= 5.1
LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUADIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
BUILD ?= build

WARN = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 \
       -Wconversion -Wno-sign-conversion
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -fPIC \
             -fvisibility=hidden $(CFLAGS)
LDFLAGS ?=

# Every source list is defined here, before mk/*.mk is read: a prerequisite
# list is expanded when its rule is read, so a fragment must not use a
# variable that a later fragment defines.
CORE_SRC = csrc/cookie.c csrc/hmac.c csrc/verify.c csrc/base64.c \
           csrc/session.c csrc/date.c csrc/utf8.c csrc/ws.c csrc/version.c \
           csrc/random.c csrc/slot.c
CORE_HDR = csrc/passport.h csrc/internal.h
CORE_LIB = $(BUILD)/librestypassport.so
VERSION := $(shell sed -n 's/.*define RP_VERSION "\(.*\)".*/\1/p' csrc/passport.h)

# The blocking hiredis client for plain LuaJIT (mk/redis.mk): a library of
# its own, built only where hiredis is installed, so nginx deployments need
# neither libhiredis nor its headers.  HAVE_HIREDIS=no skips it anyway.
REDIS_SRC = csrc/redis_sync.c
REDIS_HDR = csrc/redis_sync.h
REDIS_LIB = $(BUILD)/librestypassport_redis.so
HIREDIS_CFLAGS ?= $(shell pkg-config --cflags hiredis 2>/dev/null)
HIREDIS_LIBS ?= $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis)
HASH := \#
ifeq ($(origin HAVE_HIREDIS),undefined)
HAVE_HIREDIS := $(shell { pkg-config --exists hiredis || \
    printf '$(HASH)include <hiredis/hiredis.h>\n' | \
    $(CC) $(HIREDIS_CFLAGS) -E -x c - ; } >/dev/null 2>&1 && echo yes)
endif

# The WebSocket load generator: bench-e2e, bench-sockets and the fault specs.
LOADGEN = $(BUILD)/bench/loadgen

RESULTS = $(BUILD)/results
BUSTED = busted --lua=luajit
RUN = tools/run-suite.sh $(RESULTS)
ASAN_LIB = $(BUILD)/asan/librestypassport.so
ASAN_RT = $(shell clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null)
SUITES = lint unit asan valgrind integration fuzz browser

.PHONY: all test setup run-tests install clean deps lint bench rock \
        $(addprefix test-,$(SUITES))

all: $(CORE_LIB)

$(CORE_LIB): $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(CORE_SRC) $(LDFLAGS) -lcrypto

LUA_FILES = $(shell cd lua && find resty -name '*.lua' | sort)

install: all
	install -d $(DESTDIR)$(LIBDIR)
	install -m 0755 $(CORE_LIB) $(DESTDIR)$(LIBDIR)/
	for f in $(LUA_FILES); do \
	  install -D -m 0644 lua/$$f $(DESTDIR)$(LUADIR)/$$f || exit 1; \
	done

# Every suite writes busted-style JSON into $(RESULTS); the summary counts
# them and prints the closing "N passed, N failed" line.
test: setup
	@$(MAKE) --no-print-directory run-tests

# What a fresh machine lacks: Debian packages, then the pinned npm packages
# (npm ci only when the lock changed since the last install).
setup:
	tools/deps.sh
	@if [ ! -f node_modules/.package-lock.json ] || \
	    [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm ci --no-audit --no-fund; fi

run-tests: all $(ASAN_LIB)
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	-@$(MAKE) --no-print-directory -k $(addprefix test-,$(SUITES))
	@luajit tools/test-summary.lua $(RESULTS) $(SUITES)

test-lint:
	$(RUN) lint luajit tools/lint.lua

test-unit: all
	$(RUN) unit $(BUSTED) -o json

# The same specs against a build with ASan+UBSan: the runtime is preloaded
# because luajit itself is not instrumented.  Specs tagged lua_only (long
# property and differential runs of pure-Lua code, no call into the C core)
# are left to the unit suite here and under valgrind: a sanitizer has
# nothing of ours to check in them.
$(ASAN_LIB): $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(dir $@)
	clang $(ALL_CFLAGS) -O1 -fsanitize=address,undefined \
	  -fno-sanitize-recover=all -fno-omit-frame-pointer -shared -o $@ \
	  $(CORE_SRC) $(LDFLAGS) -lcrypto

test-asan: $(ASAN_LIB)
	$(RUN) asan env LD_PRELOAD=$(ASAN_RT) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 RP_EXPECT_LIB=$(ASAN_LIB) \
	  $(BUSTED) --exclude-tags=timing,lua_only --cpath='$(BUILD)/asan/?.so' -o json

# Under valgrind busted must run in-process (no --lua re-exec).
test-valgrind: all
	$(RUN) valgrind valgrind -q --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite luajit $$(command -v busted) --exclude-tags=timing,lua_only -o json

# The fault specs drive $(LOADGEN).
test-integration: all $(LOADGEN)
	$(RUN) integration $(BUSTED) --run=integration -o json

deps:
	tools/deps.sh

# Every libFuzzer target for 40 s, two at a time (mk/fuzz.mk).
test-fuzz:
	FUZZ_JSON=$(RESULTS)/fuzz.json $(MAKE) --no-print-directory fuzz-ci

clean:
	rm -rf $(BUILD)

# Each concern keeps its rules in its own fragment.
# (new fragments are picked up without touching this file).
include $(sort $(wildcard mk/*.mk))
