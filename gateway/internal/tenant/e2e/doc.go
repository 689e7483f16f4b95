// Package e2e holds the end-to-end tests of tenants, limits, usage and
// telemetry through real processes: two vlcache-gateway binaries sharing one
// redis-server, a tritonserver loading the vlcache backend, and an OTLP
// receiver. They are behind the e2e build tag (make test-tenants-e2e) because
// they need the backend library built first.
package e2e
