# mk/redis.mk: included by the Makefile.
#
# librestypassport_redis.so: the blocking hiredis client the Redis store
# uses OUTSIDE nginx (plain LuaJIT).  A library of its own, so the core
# library stays free of I/O and nginx deployments need no libhiredis.
# Written for hiredis 0.14 and 1.x (libhiredis-dev on Debian/Ubuntu,
# hiredis-devel on Fedora).

REDIS_SRC = csrc/redis_sync.c
REDIS_HDR = csrc/redis_sync.h
REDIS_LIB = $(BUILD)/librestypassport_redis.so
HIREDIS_CFLAGS ?= $(shell pkg-config --cflags hiredis 2>/dev/null)
HIREDIS_LIBS ?= $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis)

.PHONY: install-redis bench-store

all: $(REDIS_LIB)

$(REDIS_LIB): $(REDIS_SRC) $(REDIS_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(HIREDIS_CFLAGS) -shared -o $@ $(REDIS_SRC) \
		$(LDFLAGS) $(HIREDIS_LIBS) -pthread

install: install-redis

# The Lua modules (store/*.lua included) are installed by the Makefile.
install-redis: $(REDIS_LIB)
	install -d $(DESTDIR)$(LIBDIR)
	install -m 0755 $(REDIS_LIB) $(DESTDIR)$(LIBDIR)/

# Session gets/s through the store inside nginx (wrk, 1 worker) against
# redis-benchmark -t get (1 connection, no pipelining); prints the ratio.
bench-store: all
	bench/store_bench.sh

bench: bench-store
