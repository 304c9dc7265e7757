# mk/fuzz.mk: libFuzzer targets, one per C entry point.
#   make fuzz [FUZZ_TIME=60] [FUZZ_JOBS=2]  each target for FUZZ_TIME seconds,
#                                           FUZZ_JOBS at a time
#   make fuzz-ci               what `make test` runs: 40 s each, 2 at a time
#                              (11 targets: about 4 minutes on 2 cores)
#   make fuzz-smoke            each target for a few seconds
# Built with clang, ASan + UBSan, linking the core sources directly.
# `make fuzz` fails if any target crashes or breaks an invariant.
FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_SMOKE_TIME ?= 3
FUZZ_CI_TIME ?= 40
FUZZ_JOBS ?= 2
FUZZ_BIN = $(BUILD)/fuzz
FUZZ_TARGETS = cookie_get cookies_get unsign keygrip_session base64_decode \
               session_parse parse_date ws_frame utf8_scan key_slot
# redis_reply (below) adds csrc/redis_sync.c and links hiredis: only where
# the Makefile found hiredis.
ifeq ($(HAVE_HIREDIS),yes)
FUZZ_TARGETS += redis_reply
endif
# Every target links the whole core.
FUZZ_SRC = $(CORE_SRC)
FUZZ_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -g -O1 \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -Icsrc

.PHONY: fuzz fuzz-smoke fuzz-ci fuzz-build

fuzz-build: $(addprefix $(FUZZ_BIN)/,$(FUZZ_TARGETS))

$(FUZZ_BIN)/%: fuzz/%.c fuzz/fuzz.h $(FUZZ_SRC) $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC) -lcrypto -lm

# The reply handling in csrc/redis_sync.c, over hiredis (Debian's build).
$(FUZZ_BIN)/redis_reply: fuzz/redis_reply.c fuzz/fuzz.h $(REDIS_SRC) $(REDIS_HDR) $(FUZZ_SRC) $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(HIREDIS_CFLAGS) -o $@ $< $(REDIS_SRC) $(FUZZ_SRC) \
		$(HIREDIS_LIBS) -lcrypto -lm -pthread

fuzz: fuzz-build
	FUZZ_JOBS=$(FUZZ_JOBS) sh fuzz/run.sh $(FUZZ_BIN) $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-ci: fuzz-build
	FUZZ_JOBS=$(FUZZ_JOBS) sh fuzz/run.sh $(FUZZ_BIN) $(FUZZ_CI_TIME) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	FUZZ_JOBS=$(FUZZ_JOBS) sh fuzz/run.sh $(FUZZ_BIN) $(FUZZ_SMOKE_TIME) $(FUZZ_TARGETS)
