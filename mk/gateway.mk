# Go gateway: OpenAI-compatible API in front of tritonserver.
GO ?= go
# The gateway's own packages (tenants and eval test theirs in mk/tenants.mk, mk/eval.mk).
GATEWAY_PKGS := ./gateway/cmd/vlcache-gateway/... ./gateway/e2e/... \
  $(addprefix ./gateway/internal/,openai/... server/... triton/... tokenizer/... chat/... images/... config/... admission/...)
GATEWAY_FUZZTIME ?= 3s

.PHONY: deps-gateway build-gateway test-gateway test-gateway-fuzz gateway-oracle test-gateway-e2e run
DEPS_TARGETS += deps-gateway
TEST_TARGETS += test-gateway test-gateway-e2e
GATEWAY_E2E_TIMEOUT ?= 10m

deps-gateway:
	gateway/scripts/deps.sh
	$(GO) mod download

build-gateway:
	$(GO) build -o gateway/bin/ ./gateway/cmd/vlcache-gateway

# Unit tests, then each fuzz target briefly.
test-gateway: deps-gateway
	$(GO) vet $(GATEWAY_PKGS)
	$(GO) test -count=1 -timeout 5m $(GATEWAY_PKGS)
	$(MAKE) --no-print-directory test-gateway-fuzz

GATEWAY_FUZZ := tokenizer:FuzzEncodeDecode openai:FuzzParseChatRequest openai:FuzzKVHeaders \
  images:FuzzParseDataURL server:FuzzSSERoundTrip
test-gateway-fuzz:
	@set -e; for t in $(GATEWAY_FUZZ); do \
	  pkg=$${t%%:*}; fn=$${t#*:}; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(GATEWAY_FUZZTIME) -parallel 1 ./gateway/internal/$$pkg; \
	done

# Regenerates the tokenizer and chat-template oracles with Hugging Face
# `tokenizers` and Jinja2 (pip); the outputs are committed.
gateway-oracle: deps-gateway
	python3 -m pip install -q tokenizers==0.23.3 jinja2==3.1.6
	python3 gateway/internal/chat/testdata/gen_templates.py gateway/internal/chat/testdata/templates_oracle.json \
	  qwen3 .deps/tokenizers/qwen3
	python3 gateway/internal/tokenizer/testdata/gen_oracle.py gateway/internal/tokenizer/testdata/oracle.json \
	  fixture=testdata/tiny-llava-random/tokenizer.json \
	  qwen3=.deps/tokenizers/qwen3/tokenizer.json \
	  llama2=.deps/tokenizers/llama2/tokenizer.json \
	  llama2_metaspace=.deps/tokenizers/llama2/tokenizer.json

# Regenerates the Triton gRPC client from gateway/internal/triton/proto with
# pinned generators (installed into .deps/bin); the output is committed.
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
.PHONY: gateway-proto
gateway-proto:
	GOBIN=$(CURDIR)/.deps/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CURDIR)/.deps/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(CURDIR)/.deps/bin:$$PATH protoc -I gateway/internal/triton/proto \
	  --go_out=paths=source_relative:gateway/internal/triton/inference \
	  --go-grpc_out=paths=source_relative:gateway/internal/triton/inference \
	  gateway/internal/triton/proto/grpc_service.proto

# End to end: real tritonserver with the backend from $(BUILD_DIR) and the
# tiny model, the gateway binary, openai-go and curl (gateway/e2e, tag e2e).
test-gateway-e2e: build-cpp
	VLCACHE_BUILD_DIR=$(abspath $(BUILD_DIR)) $(GO) test -count=1 -tags e2e -timeout $(GATEWAY_E2E_TIMEOUT) -v ./gateway/e2e/

# Builds everything, starts tritonserver and the gateway on loopback with the
# tiny model, prints a curl to paste; Ctrl-C stops both.
run: build-cpp build-gateway
	VLCACHE_BUILD_DIR=$(abspath $(BUILD_DIR)) scripts/run.sh
