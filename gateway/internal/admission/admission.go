// Package admission decides who may call the gateway and with what KV-cache
// budget, and accounts for what they used. The chat handler (internal/server)
// knows only this interface: Open is the embedded default (no keys, server
// defaults); internal/tenant provides the multi-tenant one backed by Redis or a
// tenants file.
package admission

import (
	"context"
	"fmt"
	"net/http"
)

// KVRequest is what the client asked for (X-KV-Cache-* headers or the body's
// kv_cache extension). Nil / empty fields were not asked for.
type KVRequest struct {
	KeepRatio *float64
	Policy    string
}

// KVSetting is the cache setting applied to a request.
type KVSetting struct {
	KeepRatio float64
	Policy    string
}

// Request is what admission needs to know before any work is done.
type Request struct {
	APIKey    string // bearer token; "" when the client sent none
	Model     string
	Requested KVRequest
}

// Usage is what a finished request consumed.
type Usage struct {
	PromptTokens     int
	ImageTokens      int
	CompletionTokens int
	KVTokensFull     int64
	KVTokensKept     int64
	KVBytesFull      int64
	KVBytesKept      int64
	Status           int // HTTP status the client got (200 for a stream that started)
}

// Grant is an admitted request. Finish must be called exactly once, on every
// path, so that leases are released and usage recorded.
type Grant interface {
	Tenant() string
	KV() KVSetting
	// ChargePrompt is called once the prompt is tokenised, before the backend
	// is called; it may refuse with an *Error (429 when tokens/min run out).
	ChargePrompt(ctx context.Context, promptTokens int) error
	// Header holds response headers to send (x-ratelimit-*); read after Admit
	// and after ChargePrompt.
	Header() http.Header
	Finish(ctx context.Context, usage Usage)
}

// Admitter admits or refuses requests. Refusals are *Error values.
type Admitter interface {
	Admit(ctx context.Context, req Request) (Grant, error)
}

// Error is a refusal in the shape the OpenAI error body needs.
type Error struct {
	Status  int    // HTTP status: 400, 401, 403, 429, 503
	Type    string // invalid_request_error, authentication_error, permission_error, rate_limit_error, service_unavailable
	Code    string // e.g. invalid_api_key, model_not_found, rate_limit_exceeded
	Param   string
	Message string
	Header  http.Header // extra headers (retry-after, x-ratelimit-*)
	Tenant  string      // the tenant when the key was valid (403, 429), for metrics labels
}

func (e *Error) Error() string { return e.Message }

// Open admits everyone with the server's default KV setting; a requested ratio
// must lie in (0, 1] and a requested policy must be known. It keeps no
// counters.
type Open struct {
	Default  KVSetting
	Policies []string // known policy names
}

func (o *Open) Admit(_ context.Context, req Request) (Grant, error) {
	kv := o.Default
	if r := req.Requested.KeepRatio; r != nil {
		if !(*r > 0 && *r <= 1) {
			return nil, &Error{Status: 400, Type: "invalid_request_error", Code: "invalid_kv_cache_ratio",
				Param: "kv_cache.keep_ratio", Message: fmt.Sprintf("keep ratio %v is outside (0, 1]", *r)}
		}
		kv.KeepRatio = *r
	}
	if p := req.Requested.Policy; p != "" {
		if !contains(o.Policies, p) {
			return nil, &Error{Status: 400, Type: "invalid_request_error", Code: "invalid_kv_cache_policy",
				Param: "kv_cache.policy", Message: fmt.Sprintf("unknown KV cache policy %q; known: %v", p, o.Policies)}
		}
		kv.Policy = p
	}
	return &openGrant{kv: kv, header: http.Header{}}, nil
}

type openGrant struct {
	kv     KVSetting
	header http.Header
}

func (g *openGrant) Tenant() string                          { return "default" }
func (g *openGrant) KV() KVSetting                           { return g.kv }
func (g *openGrant) ChargePrompt(context.Context, int) error { return nil }
func (g *openGrant) Header() http.Header                     { return g.header }
func (g *openGrant) Finish(context.Context, Usage)           {}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
