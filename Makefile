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

CORE_SRC = csrc/cookie.c csrc/hmac.c csrc/base64.c csrc/session.c csrc/date.c
CORE_HDR = csrc/passport.h csrc/internal.h
CORE_LIB = $(BUILD)/librestypassport.so

.PHONY: all test install clean deps lint bench

all: $(CORE_LIB)

$(CORE_LIB): $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(CORE_SRC) $(LDFLAGS) -lcrypto

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LUADIR)/resty/passport
	install -m 0755 $(CORE_LIB) $(DESTDIR)$(LIBDIR)/
	install -m 0644 lua/resty/passport.lua $(DESTDIR)$(LUADIR)/resty/ 2>/dev/null || true
	install -m 0644 lua/resty/passport/*.lua $(DESTDIR)$(LUADIR)/resty/passport/

clean:
	rm -rf $(BUILD)

# Each concern keeps its rules in its own fragment.
include mk/redis.mk mk/bench.mk mk/fuzz.mk
