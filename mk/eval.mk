# Evaluation and load benchmark (vlcache-eval, vlcache-loadgen; docs/eval.md):
# unit tests, then smoke runs through the real engine runner, tritonserver and
# gateway (scripts/eval-smoke.sh). mk/cpp.mk declares build-cpp.
GO ?= go
EVAL_PKGS := ./gateway/internal/eval/... ./gateway/internal/loadgen/... ./gateway/internal/plot/... \
  ./gateway/internal/benchreport/... ./gateway/cmd/vlcache-eval/... ./gateway/cmd/vlcache-loadgen/... \
  ./gateway/cmd/vlcache-benchplot/...
# Seconds the smoke runs may take before they are killed.
EVAL_SMOKE_TIMEOUT ?= 420

.PHONY: test-eval test-eval-smoke eval-fixture
TEST_TARGETS += test-eval test-eval-smoke

test-eval:
	$(GO) vet $(EVAL_PKGS)
	$(GO) test -count=1 -timeout 5m $(EVAL_PKGS)

test-eval-smoke: build-cpp
	timeout $(EVAL_SMOKE_TIMEOUT) scripts/eval-smoke.sh $(BUILD_DIR)

# The full fixture evaluation of docs/eval.md (40 min to 2 h on 2 shared cores);
# results-local/ is ignored by git: copy the small files worth keeping to docs/results/.
EVAL_OUT ?= results-local/eval-fixture
eval-fixture: build-cpp
	$(GO) run ./gateway/cmd/vlcache-eval -runner $(BUILD_DIR)/backend/tools/vlcache-run \
	  -protocols P1,P2 -out $(EVAL_OUT)
