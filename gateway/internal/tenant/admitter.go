package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/limits"
	"github.com/vlcache/vlcache/gateway/internal/telemetry"
	"github.com/vlcache/vlcache/gateway/internal/usage"
)

// Options tune the Admitter; zero values take the documented defaults.
type Options struct {
	// Policies are the KV cache policy names the backend knows; a request
	// naming another is refused with 400.
	Policies []string
	// DefaultPolicy is used for tenants without a default_policy; empty leaves
	// the choice to the model's own default.
	DefaultPolicy string
	// LeaseTTL is how long a concurrency slot outlives its last refresh: the
	// time a dead gateway's streams keep counting. Default 30s.
	LeaseTTL time.Duration
	// LeaseRefresh is how often a live stream refreshes its lease. Default LeaseTTL/3.
	LeaseRefresh time.Duration
	// UnavailableRetryAfter is the retry-after sent with 503 while the tenant
	// store is unreachable. Default 2s.
	UnavailableRetryAfter time.Duration
	// StoreTimeout bounds each store call on the request path. Default 2s.
	StoreTimeout time.Duration
	// KeyPrefix namespaces the limit and lease keys (e.g. "vlcache:").
	KeyPrefix string
	Log       *slog.Logger
	Now       func() time.Time
}

// Admitter is the multi-tenant admission.Admitter. Every gateway instance
// sharing one Redis enforces the same budgets because all state lives there.
type Admitter struct {
	store Store
	lim   limits.Limiter
	usage usage.Store
	opt   Options
}

var _ admission.Admitter = (*Admitter)(nil)

func NewAdmitter(store Store, lim limits.Limiter, use usage.Store, opt Options) *Admitter {
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = 30 * time.Second
	}
	if opt.LeaseRefresh <= 0 || opt.LeaseRefresh >= opt.LeaseTTL {
		opt.LeaseRefresh = opt.LeaseTTL / 3
	}
	if opt.UnavailableRetryAfter <= 0 {
		opt.UnavailableRetryAfter = 2 * time.Second
	}
	if opt.StoreTimeout <= 0 {
		opt.StoreTimeout = 2 * time.Second
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Admitter{store: store, lim: lim, usage: use, opt: opt}
}

func (a *Admitter) requestsKey(t string) string { return requestsKey(a.opt.KeyPrefix, t) }
func (a *Admitter) tokensKey(t string) string   { return tokensKey(a.opt.KeyPrefix, t) }
func (a *Admitter) leaseKey(t string) string    { return leaseKey(a.opt.KeyPrefix, t) }

// unavailable is the refusal while the store cannot be reached: never admit a
// request that could not be authenticated or limited.
func (a *Admitter) unavailable(err error) *admission.Error {
	a.opt.Log.Error("tenant store unavailable; refusing requests", "err", err)
	h := http.Header{}
	h.Set("Retry-After", strconv.Itoa(ceilSeconds(a.opt.UnavailableRetryAfter)))
	return &admission.Error{Status: http.StatusServiceUnavailable, Type: "service_unavailable", Code: "tenant_store_unavailable",
		Message: "The service cannot check API keys or limits right now; retry later.", Header: h}
}

func ceilSeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// resetString formats a reset time the way OpenAI's x-ratelimit-reset-* do ("1s", "6m0s", "120ms").
func resetString(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if d < time.Second {
		return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
	}
	return d.Round(time.Second).String()
}

func setRate(h http.Header, kind string, limit int, res limits.Result) {
	h.Set("x-ratelimit-limit-"+kind, strconv.Itoa(limit))
	h.Set("x-ratelimit-remaining-"+kind, strconv.Itoa(max(0, min(res.Remaining, limit))))
	h.Set("x-ratelimit-reset-"+kind, resetString(res.ResetAfter))
}

func rateLimited(h http.Header, code, msg string, retry time.Duration) *admission.Error {
	if retry > 0 {
		h.Set("Retry-After", strconv.Itoa(ceilSeconds(retry)))
	}
	return &admission.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: code, Message: msg, Header: h}
}

// Admit authenticates the key, checks the model and the KV request against the
// tenant, and takes the tenant's request, token and concurrency budgets.
func (a *Admitter) Admit(ctx context.Context, req admission.Request) (admission.Grant, error) {
	t, err := a.authenticate(ctx, req)
	if err != nil {
		return nil, err
	}
	kv, err := a.resolveKV(t, req)
	if err != nil {
		return nil, withTenant(err, t.Name)
	}
	g, err := a.take(ctx, t, kv)
	if err != nil {
		var ae *admission.Error
		if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests {
			a.record(ctx, t.Name, usage.Record{Rejected: 1})
		}
		return nil, withTenant(err, t.Name)
	}
	return g, nil
}

// withTenant names the (authenticated) tenant on a refusal, for metrics.
func withTenant(err error, name string) error {
	var ae *admission.Error
	if errors.As(err, &ae) {
		ae.Tenant = name
	}
	return err
}

// authenticate runs inside the caller's gateway.auth span (the server opens
// it around Admit), so it only labels that span with the tenant.
func (a *Admitter) authenticate(ctx context.Context, req admission.Request) (t *Tenant, err error) {
	defer func() {
		if t != nil {
			trace.SpanFromContext(ctx).SetAttributes(attribute.String("vlcache.tenant", t.Name))
		}
	}()
	if req.APIKey == "" {
		return nil, &admission.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "missing_api_key",
			Message: "No API key provided: send it as 'Authorization: Bearer <key>'."}
	}
	sctx, cancel := context.WithTimeout(ctx, a.opt.StoreTimeout)
	defer cancel()
	t, err = a.store.ByKeyHash(sctx, HashKey(req.APIKey))
	if errors.Is(err, ErrNotFound) {
		return nil, &admission.Error{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key",
			Message: "Incorrect API key provided."}
	}
	if err != nil {
		return nil, a.unavailable(err)
	}
	if !t.AllowsModel(req.Model) {
		return nil, &admission.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed", Param: "model", Tenant: t.Name,
			Message: fmt.Sprintf("The model %q is not available to this API key.", req.Model)}
	}
	return t, nil
}

func (a *Admitter) resolveKV(t *Tenant, req admission.Request) (admission.KVSetting, error) {
	if r := req.Requested.KeepRatio; r != nil && !(*r > 0 && *r <= 1) {
		return admission.KVSetting{}, &admission.Error{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Code: "invalid_kv_cache_ratio", Param: "kv_cache.keep_ratio", Message: fmt.Sprintf("keep ratio %v is outside (0, 1]", *r)}
	}
	kv := admission.KVSetting{KeepRatio: t.Clamp(req.Requested.KeepRatio), Policy: t.DefaultPolicy}
	if kv.Policy == "" {
		kv.Policy = a.opt.DefaultPolicy
	}
	if p := req.Requested.Policy; p != "" {
		if len(a.opt.Policies) > 0 && !slices.Contains(a.opt.Policies, p) {
			return kv, &admission.Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_kv_cache_policy",
				Param: "kv_cache.policy", Message: fmt.Sprintf("unknown KV cache policy %q; known: %v", p, a.opt.Policies)}
		}
		if len(t.Policies) > 0 && !slices.Contains(t.Policies, p) {
			return kv, &admission.Error{Status: http.StatusForbidden, Type: "permission_error", Code: "kv_cache_policy_not_allowed",
				Param: "kv_cache.policy", Message: fmt.Sprintf("KV cache policy %q is not available to this API key; allowed: %v", p, t.Policies)}
		}
		kv.Policy = p
	}
	return kv, nil
}

func (a *Admitter) take(ctx context.Context, t *Tenant, kv admission.KVSetting) (g *grant, err error) {
	ctx, span := telemetry.Start(ctx, telemetry.SpanLimits, attribute.String("vlcache.tenant", t.Name))
	defer func() { telemetry.End(span, err) }()
	sctx, cancel := context.WithTimeout(ctx, a.opt.StoreTimeout)
	defer cancel()
	h := http.Header{}
	tokensRate := limits.Rate{PerMinute: t.TokensPerMinute}
	if !tokensRate.Unlimited() {
		// Completion tokens are charged after the fact and may leave the bucket in
		// debt; a tenant in debt waits before starting more work.
		res, err := a.lim.Allow(sctx, a.tokensKey(t.Name), tokensRate, 0)
		if err != nil {
			return nil, a.unavailable(err)
		}
		setRate(h, "tokens", t.TokensPerMinute, res)
		if !res.Allowed {
			return nil, rateLimited(h, "rate_limit_exceeded",
				fmt.Sprintf("Rate limit reached for tokens per minute (limit %d); retry in %s.", t.TokensPerMinute, resetString(res.RetryAfter)), res.RetryAfter)
		}
	}
	var lease limits.Lease
	held := false
	if t.MaxConcurrent > 0 {
		l, ok, retry, err := a.lim.Acquire(sctx, a.leaseKey(t.Name), t.MaxConcurrent, a.opt.LeaseTTL)
		if err != nil {
			return nil, a.unavailable(err)
		}
		if !ok {
			return nil, rateLimited(h, "concurrency_limit_exceeded",
				fmt.Sprintf("Too many concurrent requests (limit %d); retry when one finishes.", t.MaxConcurrent), retry)
		}
		lease, held = l, true
	}
	release := func() {
		if held {
			_ = a.lim.Release(context.WithoutCancel(ctx), lease)
		}
	}
	requestsRate := limits.Rate{PerMinute: t.RequestsPerMinute}
	if !requestsRate.Unlimited() {
		res, err := a.lim.Allow(sctx, a.requestsKey(t.Name), requestsRate, 1)
		if err != nil {
			release()
			return nil, a.unavailable(err)
		}
		setRate(h, "requests", t.RequestsPerMinute, res)
		if !res.Allowed {
			release()
			return nil, rateLimited(h, "rate_limit_exceeded",
				fmt.Sprintf("Rate limit reached for requests per minute (limit %d); retry in %s.", t.RequestsPerMinute, resetString(res.RetryAfter)), res.RetryAfter)
		}
	}
	g = &grant{a: a, t: t, kv: kv, header: h, lease: lease, held: held, done: make(chan struct{})}
	if held {
		go g.refresh()
	}
	return g, nil
}

// record adds usage without failing the request: usage is accounting, and a
// lost increment is better than a refused or stuck request.
func (a *Admitter) record(ctx context.Context, tenant string, rec usage.Record) {
	if a.usage == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opt.StoreTimeout)
	defer cancel()
	if err := a.usage.Add(ctx, tenant, a.opt.Now(), rec); err != nil {
		a.opt.Log.Warn("usage not recorded", "tenant", tenant, "err", err)
	}
}

type grant struct {
	a      *Admitter
	t      *Tenant
	kv     admission.KVSetting
	header http.Header
	lease  limits.Lease
	held   bool

	mu      sync.Mutex
	refused bool // ChargePrompt refused: the request never reached the backend
	once    sync.Once
	done    chan struct{}
}

func (g *grant) Tenant() string          { return g.t.Name }
func (g *grant) KV() admission.KVSetting { return g.kv }
func (g *grant) Header() http.Header     { return g.header }

// refresh keeps the lease alive while the request runs; if this process dies
// the refreshes stop and the lease lapses after LeaseTTL.
func (g *grant) refresh() {
	tick := time.NewTicker(g.a.opt.LeaseRefresh)
	defer tick.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), g.a.opt.StoreTimeout)
			if err := g.a.lim.Refresh(ctx, g.lease, g.a.opt.LeaseTTL); err != nil {
				g.a.opt.Log.Warn("lease not refreshed", "tenant", g.t.Name, "err", err)
			}
			cancel()
		}
	}
}

func (g *grant) ChargePrompt(ctx context.Context, promptTokens int) (err error) {
	rate := limits.Rate{PerMinute: g.t.TokensPerMinute}
	if rate.Unlimited() || promptTokens <= 0 {
		return nil
	}
	// The server wraps this call in the gateway.limits.prompt_tokens span.
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("vlcache.prompt_tokens", promptTokens))
	defer func() {
		if err != nil {
			g.mu.Lock()
			g.refused = true
			g.mu.Unlock()
			err = withTenant(err, g.t.Name)
		}
	}()
	if promptTokens > rate.PerMinute {
		h := g.header
		return rateLimited(h, "rate_limit_exceeded", fmt.Sprintf(
			"Request too large: %d prompt tokens exceed the limit of %d tokens per minute.", promptTokens, rate.PerMinute), 0)
	}
	sctx, cancel := context.WithTimeout(ctx, g.a.opt.StoreTimeout)
	defer cancel()
	res, err := g.a.lim.Allow(sctx, g.a.tokensKey(g.t.Name), rate, promptTokens)
	if err != nil {
		return g.a.unavailable(err)
	}
	setRate(g.header, "tokens", rate.PerMinute, res)
	if !res.Allowed {
		return rateLimited(g.header, "rate_limit_exceeded", fmt.Sprintf(
			"Rate limit reached for tokens per minute (limit %d, requested %d); retry in %s.", rate.PerMinute, promptTokens, resetString(res.RetryAfter)), res.RetryAfter)
	}
	return nil
}

func (g *grant) Finish(ctx context.Context, u admission.Usage) {
	g.once.Do(func() {
		close(g.done)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.a.opt.StoreTimeout)
		defer cancel()
		if g.held {
			if err := g.a.lim.Release(ctx, g.lease); err != nil {
				g.a.opt.Log.Warn("lease not released; it lapses by itself", "tenant", g.t.Name, "err", err)
			}
		}
		g.mu.Lock()
		refused := g.refused
		g.mu.Unlock()
		if refused {
			g.a.record(ctx, g.t.Name, usage.Record{Rejected: 1})
			return
		}
		if rate := (limits.Rate{PerMinute: g.t.TokensPerMinute}); u.CompletionTokens > 0 && !rate.Unlimited() {
			if _, err := g.a.lim.Debit(ctx, g.a.tokensKey(g.t.Name), rate, u.CompletionTokens); err != nil {
				g.a.opt.Log.Warn("completion tokens not charged", "tenant", g.t.Name, "err", err)
			}
		}
		rec := usage.Record{
			Requests:         1,
			PromptTokens:     int64(u.PromptTokens),
			ImageTokens:      int64(u.ImageTokens),
			CompletionTokens: int64(u.CompletionTokens),
			KVTokensFull:     u.KVTokensFull,
			KVTokensKept:     u.KVTokensKept,
			KVTokensSaved:    max(0, u.KVTokensFull-u.KVTokensKept),
			KVBytesFull:      u.KVBytesFull,
			KVBytesKept:      u.KVBytesKept,
			KVBytesSaved:     max(0, u.KVBytesFull-u.KVBytesKept),
		}
		if u.Status >= 400 {
			rec.Errors = 1
		}
		g.a.record(ctx, g.t.Name, rec)
	})
}
