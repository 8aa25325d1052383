# chexd - chest X-ray classification service.
#   make          build bin/chexd, bin/chex and the demo model
#   make run      install what is missing, build, serve on 127.0.0.1:8080
#   make test     install test dependencies, build, run every test
#   make asan     unit + integration tests under ASan/UBSan (also part of make test)
#   make fuzz     libFuzzer targets for FUZZ_SECONDS each (default 60)
#   make bench    benchmarks (figures, not pass/fail)
#   make image-test  build the Dockerfile with podman and run the image
# BUILD and BIN may be overridden (e.g. make BUILD=/tmp/b BIN=/tmp/b/bin) so
# several builds can live side by side.

BUILD ?= build
BIN ?= bin
MODELS ?= models
CC ?= gcc
PY ?= /usr/bin/python3
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60

OPT ?= -O2
CFLAGS ?= $(OPT) -g
override CFLAGS += -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -MMD -MP -I.
LDFLAGS ?=
override LDFLAGS += -fopenmp
LIBS := -lmicrohttpd -lgnutls -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm -lpthread

# Kernels for one instruction set are compiled with its flags only; the choice
# among them happens at run time (model/ ISA dispatch), never -march=native.
ISA_AVX512 := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni -mfma -mavx2
ISA_AVX2 := -mavx2 -mfma -mf16c

MODULES := model preprocessing report config server tools/eval
MAINS := server/chexd_main.c server/chex_main.c
lib_src = $(filter-out $(MAINS),$(wildcard $(1)/*.c))
MODEL_SRC := $(call lib_src,model)
PRE_SRC := $(call lib_src,preprocessing)
CFG_SRC := $(call lib_src,config)
SRV_SRC := $(call lib_src,server)
EVAL_SRC := $(call lib_src,tools/eval)
REPORT_SRC := $(call lib_src,report)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_MODEL := $(BUILD)/libchex_model.a
LIB_PRE := $(BUILD)/libchex_pre.a
LIB_CFG := $(BUILD)/libchex_config.a
LIB_SRV := $(BUILD)/libchex_server.a
LIB_EVAL := $(BUILD)/libchex_eval.a
LIB_REPORT := $(BUILD)/libchex_report.a
ALL_LIBS := $(LIB_SRV) $(LIB_EVAL) $(LIB_CFG) $(LIB_REPORT) $(LIB_PRE) $(LIB_MODEL)
LINK_LIBS = -Wl,--start-group $(ALL_LIBS) -Wl,--end-group $(LIBS)

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TEST_HELPERS := $(wildcard tests/unit/helpers/*.c)

DEMO_MODEL := $(MODELS)/chexnet-demo.safetensors

.PHONY: all run test unit asan asan-build fuzz bench clean deps deps-test model image-test
all: $(BIN)/chexd $(BIN)/chex $(DEMO_MODEL)

deps:
	@bash deploy/install-deps.sh --runtime --build
deps-test:
	@bash deploy/install-deps.sh --runtime --build --test

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_AVX512) -c $< -o $@
$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_AVX2) -c $< -o $@
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

define make_lib
$(1): $(call obj,$(2))
	@mkdir -p $$(dir $$@)
	rm -f $$@
	$$(if $$^,ar rcs $$@ $$^,ar rcs $$@)
endef
$(eval $(call make_lib,$(LIB_MODEL),$(MODEL_SRC)))
$(eval $(call make_lib,$(LIB_PRE),$(PRE_SRC)))
$(eval $(call make_lib,$(LIB_CFG),$(CFG_SRC)))
$(eval $(call make_lib,$(LIB_SRV),$(SRV_SRC)))
$(eval $(call make_lib,$(LIB_EVAL),$(EVAL_SRC)))
$(eval $(call make_lib,$(LIB_REPORT),$(REPORT_SRC)))

$(BIN)/chexd: $(call obj,server/chexd_main.c) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LINK_LIBS)
$(BIN)/chex: $(call obj,server/chex_main.c) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LINK_LIBS)

# The default model: deterministic demo weights (no trained weights can be
# downloaded here); metadata says demo=true.
$(BUILD)/tools/make_demo_weights: $(call obj,tools/make_demo_weights.c) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LINK_LIBS)
# Its int8 calibration (precision: int8) comes from the real radiographs kept
# in tests/data (PROVENANCE.md): the demo file works at either precision.
# tools/make_demo_model.sh holds the recipe (tests/reference/
# test_demo_reproducible.sh rebuilds it and compares the bytes).
CALIB_IMAGES := $(shell bash tools/make_demo_model.sh --inputs)
$(DEMO_MODEL): $(BUILD)/tools/make_demo_weights $(BIN)/chex $(CALIB_IMAGES) tools/make_demo_model.sh
	@mkdir -p $(dir $@)
	bash tools/make_demo_model.sh $(BUILD)/tools/make_demo_weights $(BIN)/chex $@
model: $(DEMO_MODEL)

$(BUILD)/tests/%: $(call obj,tests/unit/%.c) $(call obj,$(TEST_HELPERS)) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(call obj,$(TEST_HELPERS)) $(LINK_LIBS) -lcmocka

unit: $(UNIT_BINS)

run: deps
	$(MAKE) all
	$(BIN)/chexd --model $(DEMO_MODEL) --listen 127.0.0.1 --port 8080

# Every test: unit binaries, then tests/*/test_*.sh scripts (reference against
# PyTorch, integration against the real daemon, fuzz pass, ...), then the unit
# and integration tests again under ASan/UBSan (as `make asan`). Both runs
# always run and print their "tests: N passed, N failed" line; it fails if
# either failed.
test: deps-test
	$(MAKE) all unit
	$(MAKE) asan-build
	rc=0; \
	BUILD=$(BUILD) BIN=$(BIN) MODELS=$(MODELS) PY=$(PY) FUZZ_CC=$(FUZZ_CC) \
		bash tests/run_all.sh || rc=1; \
	echo "=== under ASan/UBSan ($(ASAN_DIR))"; \
	$(ASAN_ENV) bash tests/run_all.sh unit integration || rc=1; \
	exit $$rc

# The sanitized build in $(BUILD)/asan: the binaries, the demo-weights tool and
# the unit tests, never the demo model: the tests use the one the normal build
# calibrated ($(MODELS)), which an ASan -O1 chex would rebuild in minutes.
ASAN_DIR := $(BUILD)/asan
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_ENV = BUILD=$(ASAN_DIR) BIN=$(ASAN_DIR)/bin MODELS=$(MODELS) PY=$(PY) CHEX_ASAN=1 \
	ASAN_OPTIONS=detect_leaks=1
asan-build:
	$(MAKE) all
	$(MAKE) BUILD=$(ASAN_DIR) BIN=$(ASAN_DIR)/bin CFLAGS="$(ASAN_FLAGS)" \
		LDFLAGS="-fsanitize=address,undefined" $(ASAN_DIR)/bin/chexd $(ASAN_DIR)/bin/chex \
		$(ASAN_DIR)/tools/make_demo_weights unit
asan: deps-test
	$(MAKE) asan-build
	$(ASAN_ENV) bash tests/run_all.sh unit integration

comma := ,
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_EXTRA_fuzz_safetensors := model/safetensors.c model/model_err.c
FUZZ_EXTRA_fuzz_oip := server/oip.c
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp
# preprocessing/ is compiled once for every target (same coverage instrumentation
# without libFuzzer's main: fuzzer-no-link), each target links those objects
FUZZ_PRE_OBJS := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(PRE_SRC))
$(BUILD)/fuzz/obj/%.o: %.c $(wildcard preprocessing/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(subst fuzzer$(comma),fuzzer-no-link$(comma),$(FUZZ_CFLAGS)) -c -o $@ $<
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_PRE_OBJS) $(wildcard preprocessing/*.h tests/fuzz/*.h) $(SRV_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_PRE_OBJS) $(FUZZ_EXTRA_$*) -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
fuzz: $(FUZZ_BINS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) BUILD=$(BUILD) bash tests/fuzz/run.sh $(FUZZ_BINS)

# The container image built with podman from the real Dockerfile and run from
# its exported filesystem (no Docker engine needed); also part of make test.
image-test: deps-test
	BUILD=$(BUILD) BIN=$(BIN) MODELS=$(MODELS) PY=$(PY) bash tests/deploy/test_image.sh

bench: all
	BUILD=$(BUILD) BIN=$(BIN) MODELS=$(MODELS) PY=$(PY) bash tools/bench.sh

clean:
	rm -rf $(BUILD) $(BIN)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
