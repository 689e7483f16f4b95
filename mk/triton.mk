# Triton backend (libtriton_vlcache.so): headers and server at deps time, the
# end-to-end tests against a real tritonserver, and a one-command local server.
# mk/cpp.mk (included before this file) declares CMAKE_FLAGS and build-cpp.
TRITON_INCLUDE_DIR ?= $(CURDIR)/.deps/triton/include
CMAKE_FLAGS += -DTRITON_INCLUDE_DIR=$(TRITON_INCLUDE_DIR)

TRITON_HTTP_PORT ?= 8000
TRITON_GRPC_PORT ?= 8001
TRITON_METRICS_PORT ?= 8002
# Seconds the whole end-to-end suite may take before it is killed.
TRITON_TEST_TIMEOUT ?= 900

.PHONY: deps-triton test-triton serve-triton
DEPS_TARGETS += deps-triton
TEST_TARGETS += test-triton

deps-triton:
	scripts/deps-python.sh
	scripts/deps-triton-headers.sh

test-triton: build-cpp
	VLCACHE_BUILD_DIR=$(abspath $(BUILD_DIR)) timeout $(TRITON_TEST_TIMEOUT) \
	  python3 -m pytest -q -p no:cacheprovider backend/tests/triton

# Foreground tritonserver with triton_models/ and the backend from $(BUILD_DIR);
# Ctrl-C stops it.
serve-triton: build-cpp
	VLCACHE_BUILD_DIR=$(abspath $(BUILD_DIR)) scripts/triton-serve.sh --foreground \
	  --http $(TRITON_HTTP_PORT) --grpc $(TRITON_GRPC_PORT) --metrics $(TRITON_METRICS_PORT)
