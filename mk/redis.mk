# mk/redis.mk: librestypassport_redis.so, the blocking hiredis client the
# Redis store uses OUTSIDE nginx (plain LuaJIT).  A library of its own, so
# the core library stays free of I/O; built, installed and fuzzed only when
# the Makefile found hiredis (HAVE_HIREDIS), since nginx deployments do not
# need it.  Written for hiredis 0.14 and 1.x (libhiredis-dev on
# Debian/Ubuntu, hiredis-devel on Fedora).

.PHONY: install-redis bench-store

ifeq ($(HAVE_HIREDIS),yes)
all: $(REDIS_LIB)

install: install-redis
endif

$(REDIS_LIB): $(REDIS_SRC) $(REDIS_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(HIREDIS_CFLAGS) -shared -o $@ $(REDIS_SRC) \
		$(LDFLAGS) $(HIREDIS_LIBS) -pthread

# The Lua modules (store/*.lua included) are installed by the Makefile.
install-redis: $(REDIS_LIB)
	install -d $(DESTDIR)$(LIBDIR)
	install -m 0755 $(REDIS_LIB) $(DESTDIR)$(LIBDIR)/

# Session gets/s through the store inside nginx (wrk, 1 worker) against
# redis-benchmark -t get (1 connection, no pipelining); prints the ratio.
bench-store: all
	bench/store_bench.sh

bench: bench-store
