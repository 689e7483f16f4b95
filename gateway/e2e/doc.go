// Package e2e holds the gateway's end-to-end tests (build tag e2e, run by
// `make test-gateway-e2e`): a real tritonserver with the vlcache backend and
// the tiny test model, the real gateway binary, the official openai-go SDK
// and curl.
package e2e
