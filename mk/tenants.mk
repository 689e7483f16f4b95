# Tenants, limits, usage and telemetry (gateway/internal/{tenant,limits,usage,
# telemetry}) against a real redis-server, and the deploy/ manifests.
# test-tenants-e2e runs the real gateway binaries with Redis, tritonserver and
# an OTLP receiver; it needs the backend library (make build-cpp) and the
# tritonserver from scripts/deps-python.sh.
GO ?= go
TENANTS_PKGS := ./gateway/internal/tenant/... ./gateway/internal/limits/... \
  ./gateway/internal/usage/... ./gateway/internal/telemetry/... ./deploy/...
TENANTS_TEST_TIMEOUT ?= 180s
TENANTS_E2E_TIMEOUT ?= 600s

.PHONY: deps-tenants test-tenants test-tenants-e2e
DEPS_TARGETS += deps-tenants
TEST_TARGETS += test-tenants test-tenants-e2e

# Debian's docker-compose (1.29) lints docker-compose.yml against the Compose
# schema without a Docker engine.
deps-tenants:
	scripts/deps-apt.sh
	dpkg -s docker-compose >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose; }
	$(GO) mod download

# Fails (never skips) without redis-server: these tests exist to exercise it.
test-tenants:
	@command -v redis-server >/dev/null || { echo "test-tenants: redis-server is required (scripts/deps-apt.sh)" >&2; exit 1; }
	$(GO) vet $(TENANTS_PKGS)
	$(GO) test -count=1 -timeout $(TENANTS_TEST_TIMEOUT) $(TENANTS_PKGS)
	docker-compose -f docker-compose.yml config -q

test-tenants-e2e: build-cpp
	@command -v redis-server >/dev/null || { echo "test-tenants-e2e: redis-server is required (scripts/deps-apt.sh)" >&2; exit 1; }
	VLCACHE_BUILD_DIR=$(abspath $(BUILD_DIR)) $(GO) test -count=1 -tags e2e -timeout $(TENANTS_E2E_TIMEOUT) \
	  -run 'E2E' ./gateway/internal/tenant/e2e/...
