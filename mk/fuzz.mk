# mk/fuzz.mk: libFuzzer targets, one per C entry point (issue 7).
#   make fuzz [FUZZ_TIME=60]   each target for FUZZ_TIME seconds
#   make fuzz-smoke            each target for a few seconds (the test suite)
# Built with clang, ASan + UBSan, linking the core sources directly.
# `make fuzz` fails if any target crashes or breaks an invariant.
FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_SMOKE_TIME ?= 3
FUZZ_BIN = $(BUILD)/fuzz
FUZZ_TARGETS = cookie_get cookies_get unsign keygrip_session base64_decode \
               session_parse parse_date ws_frame
# The parsers and verifiers only: no I/O code, so no hiredis to link.
FUZZ_SRC = csrc/cookie.c csrc/hmac.c csrc/base64.c csrc/session.c csrc/date.c \
           csrc/ws.c
FUZZ_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -g -O1 \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -Icsrc

.PHONY: fuzz fuzz-smoke fuzz-build

fuzz-build: $(addprefix $(FUZZ_BIN)/,$(FUZZ_TARGETS))

$(FUZZ_BIN)/%: fuzz/%.c fuzz/fuzz.h $(FUZZ_SRC) $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC) -lcrypto -lm

fuzz: fuzz-build
	sh fuzz/run.sh $(FUZZ_BIN) $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	sh fuzz/run.sh $(FUZZ_BIN) $(FUZZ_SMOKE_TIME) $(FUZZ_TARGETS)
