# FraudShield build. `make` builds, `make run` starts the local pipeline, `make test` runs the suite.
# SANITIZE=1 builds with AddressSanitizer + UBSan into build/asan (the test suite runs there too).

APT_PACKAGES := build-essential pkg-config librdkafka-dev libevent-dev libjansson-dev libpq-dev \
                libargon2-dev libssl-dev libcmocka-dev libcurl4-openssl-dev libxgboost-dev zlib1g-dev postgresql-15 postgresql-client-15 libgeoip1 geoip-database kcat curl wrk clang gnuplot-nox jq python3 python3-yaml python3-jsonschema
PKGS := rdkafka libevent libevent_openssl jansson libpq libargon2 libcrypto libssl libcurl

ifeq ($(SANITIZE),1)
BUILD ?= build/asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD ?= build/release
SANFLAGS :=
endif

CC ?= cc
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
          -Wformat=2 -MMD -MP -Icommon -Iscorer -Iingest -Ialerter -Itools -I$(BUILD)/gen $(PKG_CFLAGS) $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS += $(PKG_LIBS) -lpthread -lm

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/migrations.o
INGEST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard ingest/*.c))
SCORER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard scorer/*.c))
ALERTER_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard alerter/*.c))
SCORER_LIB := $(filter-out $(BUILD)/scorer/main.o,$(SCORER_OBJ))
ALERTER_LIB := $(filter-out $(BUILD)/alerter/main.o,$(ALERTER_OBJ))
INGEST_LIB := $(filter-out $(BUILD)/ingest/main.o,$(INGEST_OBJ))
# tools/: evaluation, training and replay (issue 5); tools/*_main.c are the programs' mains.
TOOLS_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out %_main.c,$(wildcard tools/*.c)))
# scorer/model.c (the fraud model, XGBoost's C API) is linked by the scorer, the tools and the tests.
MODEL_LIBS := -lxgboost
TOOLS_LIBS := $(MODEL_LIBS) -lz
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# Each libFuzzer harness also runs as a unit test: test_fuzz_NAME replays tests/fuzz/corpus/NAME.tar
# (tests/fuzz/corpus_main.c), built like the rest and linked against an archive of the project's
# objects (a harness that #includes a module's .c for its static functions takes that module's
# place: the linker pulls from an archive only what is still undefined).
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/test_fuzz_%)
# Objects made by pattern chains (the tools' and the unit tests' mains) are kept: deleted as
# intermediates, every later make relinked their programs.
.SECONDARY: $(TOOLS_OBJ) $(patsubst tools/%.c,$(BUILD)/tools/%.o,$(wildcard tools/*_main.c)) \
            $(UNIT_SRC:%.c=$(BUILD)/%.o) $(FUZZ_NAMES:%=$(BUILD)/tests/fuzz/fuzz_%.o) \
            $(BUILD)/tests/fuzz/corpus_main.o
BIN := $(BUILD)/bin/fraudshield-ingest $(BUILD)/bin/fraudshield-scorer $(BUILD)/bin/fraudshield-devbroker \
       $(if $(ALERTER_OBJ),$(BUILD)/bin/fraudshield-alerter) \
       $(patsubst tools/%_main.c,$(BUILD)/bin/fraudshield-%,$(wildcard tools/*_main.c))

.PHONY: all programs deps run test unit integration clean fuzz fuzz-build bench-ingest bench-scorer bench-e2e bench-model eval \
        eval-rolling eval-ablation
all: $(BIN) $(UNIT_BIN) $(FUZZ_BIN)

# The programs without the unit tests (no cmocka needed): what deploy/Dockerfile builds.
programs: $(BIN)

# Installs the Debian packages the build, `make run` and the tests need (only those missing).
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/gen/migrations.c: $(sort $(wildcard schemas/sql/*.sql)) schemas/sql scripts/embed-sql.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-sql.sh $(sort $(wildcard schemas/sql/*.sql)) > $@

$(BUILD)/gen/migrations.o: $(BUILD)/gen/migrations.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/bin/fraudshield-ingest: $(INGEST_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/fraudshield-scorer: $(SCORER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(MODEL_LIBS)

$(BUILD)/bin/fraudshield-alerter: $(ALERTER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/fraudshield-devbroker: $(BUILD)/deploy/devbroker.o $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/fraudshield-%: $(BUILD)/tools/%_main.o $(TOOLS_OBJ) $(SCORER_LIB) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TOOLS_LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(COMMON_OBJ) $(SCORER_LIB) $(INGEST_LIB) $(ALERTER_LIB) $(TOOLS_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TOOLS_LIBS) $(shell pkg-config --libs cmocka)

# Unit tests that #include a module's .c for its static functions link against the archive, as the
# fuzz harnesses do (their copy of the module takes its place); the others link the objects.
UNIT_INCLUDING := $(BUILD)/tests/test_ingest_produce
$(UNIT_INCLUDING): $(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libfraudshield.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TOOLS_LIBS) $(shell pkg-config --libs cmocka)

$(BUILD)/libfraudshield.a: $(COMMON_OBJ) $(SCORER_LIB) $(INGEST_LIB) $(ALERTER_LIB) $(TOOLS_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/tests/test_fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/corpus_main.o $(BUILD)/libfraudshield.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TOOLS_LIBS)

# Benchmark helpers (bench/*.c): the bare libevent baseline and the open-loop latency client.
$(BUILD)/bin/bare_http: $(BUILD)/bench/bare_http.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/openloop: $(BUILD)/bench/openloop.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# What the scorer's model costs per payment (bench-model MODEL=file; BENCHMARKS.md, scorer).
$(BUILD)/bin/model_predict: $(BUILD)/bench/model_predict.o $(COMMON_OBJ) $(SCORER_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(MODEL_LIBS)

MODEL ?= .eval/protocol.model.json
bench-model: deps
	$(MAKE) $(BUILD)/bin/model_predict
	$(BUILD)/bin/model_predict $(MODEL)

# Ingest throughput and latency against the bare baseline; results go to BENCHMARKS.md by hand.
bench-ingest: deps
	$(MAKE) all $(BUILD)/bin/bare_http $(BUILD)/bin/openloop
	BUILD=$(BUILD) bash bench/ingest_bench.sh

# The scorer: 500k payments through one and two scorers against a plain COPY (BENCHMARKS.md).
bench-scorer: deps
	$(MAKE) all
	BUILD=$(BUILD) bash bench/scorer_bench.sh

# The whole pipeline end to end: sustained payments/s, consumer lag, latency at 5,000/s (BENCHMARKS.md).
bench-e2e: deps
	$(MAKE) all
	BUILD=$(BUILD) bash bench/e2e_bench.sh

# Detection quality on the handbook's data through the real pipeline (docs/detection.md section 7):
# make eval [DATA=file] [TRAIN=FROM:TO] [TEST=FROM:TO] [DELAY=days] [REUSE=1: the last replayed database]
DATA ?= ../shared/datasets/handbook/dev.csv.gz
TRAIN ?= 2018-07-25:2018-07-31
TEST ?= 2018-08-08:2018-08-14
DELAY ?= 7
EVAL_ENV = BUILD=$(BUILD) DATA='$(DATA)' TRAIN=$(TRAIN) TEST=$(TEST) DELAY=$(DELAY)
eval: deps
	$(MAKE) all
	$(EVAL_ENV) REUSE=$(or $(REUSE),0) bash scripts/eval.sh

# the rolling protocol and the feature ablation, on the replayed database (replayed first if absent)
eval-rolling: deps
	$(MAKE) all
	$(EVAL_ENV) REUSE=$(or $(REUSE),auto) MODE=rolling bash scripts/eval.sh

eval-ablation: deps
	$(MAKE) all
	$(EVAL_ENV) REUSE=$(or $(REUSE),auto) MODE=ablation bash scripts/eval.sh

# deps first, in its own make: pkg-config must see the packages it may have just installed.
run: deps
	$(MAKE) all
	BUILD=$(BUILD) bash scripts/run-local.sh

test: deps
	$(MAKE) all
	BUILD=$(BUILD) bash tests/run.sh

unit: all
	BUILD=$(BUILD) bash tests/run.sh unit

integration: all
	BUILD=$(BUILD) bash tests/run.sh integration

# libFuzzer targets for the decoders of untrusted bytes (clang; run: build/fuzz/fuzz_pay corpus/)
fuzz: deps
	$(MAKE) fuzz-build

FUZZ_CC = clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE $(PKG_CFLAGS)
fuzz-build: $(BUILD)/gen/migrations.c
	@mkdir -p build/fuzz
	$(FUZZ_CC) -Icommon \
	  -o build/fuzz/fuzz_pay tests/fuzz/fuzz_pay.c common/pay.c common/jsonfast.c common/fsutil.c $(PKG_LIBS)
	$(FUZZ_CC) -Icommon -Iingest -Iscorer \
	  -o build/fuzz/fuzz_ingest tests/fuzz/fuzz_ingest.c ingest/batch.c ingest/shopify.c scorer/outcome.c \
	  common/pay.c common/jsonfast.c common/fsutil.c common/hmac256.c $(PKG_LIBS)
	$(FUZZ_CC) -Icommon -Ialerter \
	  -o build/fuzz/fuzz_alerter tests/fuzz/fuzz_alerter.c \
	  $(filter-out alerter/main.c alerter/alerter.c alerter/outbox.c,$(wildcard alerter/*.c)) \
	  $(COMMON_SRC) $(BUILD)/gen/migrations.c $(PKG_LIBS) -lpthread -lm
	$(FUZZ_CC) -Icommon -Ialerter \
	  -o build/fuzz/fuzz_delivery tests/fuzz/fuzz_delivery.c alerter/mail.c alerter/retry.c \
	  common/fsutil.c common/log.c common/hmac256.c $(PKG_LIBS) -lpthread -lm
	$(FUZZ_CC) -Icommon -Itools \
	  -o build/fuzz/fuzz_redrive tests/fuzz/fuzz_redrive.c tools/redrive.c common/fsutil.c $(PKG_LIBS)
	$(FUZZ_CC) -Icommon -Itools \
	  -o build/fuzz/fuzz_replay tests/fuzz/fuzz_replay.c tools/replay.c common/fsutil.c $(PKG_LIBS) -lm

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
