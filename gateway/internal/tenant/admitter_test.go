package tenant_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/limits"
	"github.com/vlcache/vlcache/gateway/internal/limits/redistest"
	"github.com/vlcache/vlcache/gateway/internal/tenant"
	"github.com/vlcache/vlcache/gateway/internal/usage"
)

var policies = []string{"full", "vlcache", "h2o", "snapkv", "streamingllm", "pyramidkv"}

// gateway is one gateway's view of the shared Redis: its own client and
// Admitter, as a separate gateway process would have.
type gateway struct {
	adm   *tenant.Admitter
	store *tenant.RedisStore
	use   *usage.Redis
	rdb   *redis.Client
}

func newGateway(t *testing.T, srv *redistest.Server, opt tenant.Options) *gateway {
	rdb := srv.Client()
	opt.Policies = policies
	opt.KeyPrefix = "vlcache:"
	store := tenant.NewRedisStore(rdb, "vlcache:")
	use := usage.NewRedis(rdb, "vlcache:", 24*time.Hour)
	return &gateway{adm: tenant.NewAdmitter(store, limits.NewRedis(rdb), use, opt), store: store, use: use, rdb: rdb}
}

func addTenant(t *testing.T, s tenant.Store, tn tenant.Tenant) string {
	t.Helper()
	key, err := tenant.NewKey()
	require.NoError(t, err)
	tn.KeyHashes = []string{tenant.HashKey(key)}
	if tn.KeepRatio == (tenant.Ratio{}) {
		tn.KeepRatio = tenant.Ratio{Default: 0.5, Min: 0.1, Max: 0.8}
	}
	if tn.Models == nil {
		tn.Models = []string{"llava-tiny"}
	}
	require.NoError(t, s.Create(context.Background(), &tn))
	return key
}

func admit(g *gateway, key, model string, ratio *float64, policy string) (admission.Grant, *admission.Error) {
	gr, err := g.adm.Admit(context.Background(), admission.Request{APIKey: key, Model: model,
		Requested: admission.KVRequest{KeepRatio: ratio, Policy: policy}})
	if err != nil {
		var ae *admission.Error
		if !errors.As(err, &ae) {
			panic("refusal is not an *admission.Error: " + err.Error())
		}
		return nil, ae
	}
	return gr, nil
}

func f(v float64) *float64 { return &v }

func TestAuthentication(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{})
	key := addTenant(t, g.store, tenant.Tenant{Name: "acme"})

	_, e := admit(g, "", "llava-tiny", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusUnauthorized, e.Status)
	require.Equal(t, "missing_api_key", e.Code)

	_, e = admit(g, key+"x", "llava-tiny", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusUnauthorized, e.Status)
	require.Equal(t, "invalid_api_key", e.Code)
	require.NotContains(t, e.Message, key, "a refusal never echoes the key")

	gr, e := admit(g, key, "llava-tiny", nil, "")
	require.Nil(t, e)
	require.Equal(t, "acme", gr.Tenant())
	gr.Finish(context.Background(), admission.Usage{Status: 200})

	_, e = admit(g, key, "llava-13b", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusForbidden, e.Status)
	require.Equal(t, "permission_error", e.Type)
	require.Equal(t, "acme", e.Tenant)
	require.Equal(t, "model", e.Param)
}

func TestRatioClamping(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{})
	key := addTenant(t, g.store, tenant.Tenant{Name: "acme", DefaultPolicy: "vlcache",
		KeepRatio: tenant.Ratio{Default: 0.3, Min: 0.1, Max: 0.5}})
	cases := []struct {
		name      string
		requested *float64
		policy    string
		want      float64
		wantPol   string
		status    int
	}{
		{"default when none asked", nil, "", 0.3, "vlcache", 0},
		{"inside the range", f(0.2), "", 0.2, "vlcache", 0},
		{"below min", f(0.01), "", 0.1, "vlcache", 0},
		{"above max", f(1), "h2o", 0.5, "h2o", 0},
		{"zero is invalid", f(0), "", 0, "", 400},
		{"above one is invalid", f(1.5), "", 0, "", 400},
		{"NaN is invalid", f(math.NaN()), "", 0, "", 400},
		{"unknown policy", nil, "magic", 0, "", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gr, e := admit(g, key, "llava-tiny", c.requested, c.policy)
			if c.status != 0 {
				require.NotNil(t, e)
				require.Equal(t, c.status, e.Status)
				require.Equal(t, "invalid_request_error", e.Type)
				require.True(t, strings.HasPrefix(e.Param, "kv_cache."), e.Param)
				return
			}
			require.Nil(t, e)
			require.Equal(t, admission.KVSetting{KeepRatio: c.want, Policy: c.wantPol}, gr.KV())
			gr.Finish(context.Background(), admission.Usage{Status: 200})
		})
	}
}

func TestServerDefaultPolicy(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{DefaultPolicy: "snapkv"})
	plain := addTenant(t, g.store, tenant.Tenant{Name: "plain"})
	own := addTenant(t, g.store, tenant.Tenant{Name: "own", DefaultPolicy: "h2o"})
	for key, want := range map[string]string{plain: "snapkv", own: "h2o"} {
		gr, e := admit(g, key, "llava-tiny", nil, "")
		require.Nil(t, e)
		require.Equal(t, want, gr.KV().Policy, "the tenant's default, else the gateway's")
		gr.Finish(context.Background(), admission.Usage{Status: 200})
	}
}

func TestTenantsAreIsolated(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{})
	acme := addTenant(t, g.store, tenant.Tenant{Name: "acme", Models: []string{"llava-tiny"}, RequestsPerMinute: 2,
		Policies: []string{"vlcache"}, KeepRatio: tenant.Ratio{Default: 0.2, Min: 0.1, Max: 0.25}})
	globex := addTenant(t, g.store, tenant.Tenant{Name: "globex", Models: []string{"llava-13b"}, RequestsPerMinute: 2,
		KeepRatio: tenant.Ratio{Default: 1, Min: 0.5, Max: 1}})

	// acme's key reaches acme only: not globex's model, not beyond acme's max ratio.
	_, e := admit(g, acme, "llava-13b", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusForbidden, e.Status)
	gr, e := admit(g, acme, "llava-tiny", f(1), "")
	require.Nil(t, e)
	require.Equal(t, "acme", gr.Tenant())
	require.Equal(t, 0.25, gr.KV().KeepRatio, "acme cannot exceed its own max even though globex may keep all")
	gr.Finish(context.Background(), admission.Usage{Status: 200})
	_, e = admit(g, acme, "llava-tiny", nil, "h2o")
	require.NotNil(t, e)
	require.Equal(t, http.StatusForbidden, e.Status, "a policy outside the tenant's list is refused")

	// acme spends its quota; globex's stays whole.
	gr, e = admit(g, acme, "llava-tiny", nil, "")
	require.Nil(t, e)
	gr.Finish(context.Background(), admission.Usage{Status: 200})
	_, e = admit(g, acme, "llava-tiny", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusTooManyRequests, e.Status)
	for range 2 {
		gr, e = admit(g, globex, "llava-13b", nil, "")
		require.Nil(t, e, "globex's budget is its own")
		require.Equal(t, "globex", gr.Tenant())
		require.Equal(t, 1.0, gr.KV().KeepRatio)
		gr.Finish(context.Background(), admission.Usage{Status: 200})
	}
}

func retryAfter(t *testing.T, h http.Header) int {
	t.Helper()
	v, err := strconv.Atoi(h.Get("Retry-After"))
	require.NoError(t, err, "retry-after is whole seconds")
	return v
}

func TestRequestLimitAcrossGateways(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newGateway(t, srv, tenant.Options{}), newGateway(t, srv, tenant.Options{})
	key := addTenant(t, a.store, tenant.Tenant{Name: "acme", RequestsPerMinute: 3, TokensPerMinute: 1000})
	var refusal *admission.Error
	admitted := 0
	for i := range 5 {
		gw := []*gateway{a, b}[i%2]
		gr, e := admit(gw, key, "llava-tiny", nil, "")
		if e != nil {
			refusal = e
			continue
		}
		admitted++
		h := gr.Header()
		require.Equal(t, "3", h.Get("x-ratelimit-limit-requests"))
		require.Equal(t, strconv.Itoa(3-admitted), h.Get("x-ratelimit-remaining-requests"))
		require.Equal(t, "1000", h.Get("x-ratelimit-limit-tokens"))
		require.NotEmpty(t, h.Get("x-ratelimit-reset-requests"))
		gr.Finish(context.Background(), admission.Usage{Status: 200})
	}
	require.Equal(t, 3, admitted, "two gateways share one budget of 3 requests/min")
	require.NotNil(t, refusal)
	require.Equal(t, http.StatusTooManyRequests, refusal.Status)
	require.Equal(t, "rate_limit_error", refusal.Type)
	require.Equal(t, "rate_limit_exceeded", refusal.Code)
	require.Equal(t, "acme", refusal.Tenant, "refusals of a known tenant name it for metrics")
	require.Equal(t, "0", refusal.Header.Get("x-ratelimit-remaining-requests"))
	require.Equal(t, "3", refusal.Header.Get("x-ratelimit-limit-requests"))
	ra := retryAfter(t, refusal.Header)
	require.GreaterOrEqual(t, ra, 1)
	require.LessOrEqual(t, ra, 20, "one request of 3/min frees up within 20s")
}

func TestTokenLimit(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newGateway(t, srv, tenant.Options{}), newGateway(t, srv, tenant.Options{})
	key := addTenant(t, a.store, tenant.Tenant{Name: "acme", TokensPerMinute: 100})
	ctx := context.Background()

	g1, e := admit(a, key, "llava-tiny", nil, "")
	require.Nil(t, e)
	require.NoError(t, g1.ChargePrompt(ctx, 60))
	require.Equal(t, "40", g1.Header().Get("x-ratelimit-remaining-tokens"))

	g2, e := admit(b, key, "llava-tiny", nil, "")
	require.Nil(t, e, "40 tokens are left, so admission passes")
	err := g2.ChargePrompt(ctx, 60)
	var ae *admission.Error
	require.ErrorAs(t, err, &ae, "60 prompt tokens do not fit in the 40 left, even on the other gateway")
	require.Equal(t, http.StatusTooManyRequests, ae.Status)
	require.Equal(t, "100", ae.Header.Get("x-ratelimit-limit-tokens"))
	require.GreaterOrEqual(t, retryAfter(t, ae.Header), 1)
	g2.Finish(ctx, admission.Usage{Status: 429, PromptTokens: 60})

	// g1's completion is charged after the fact and puts the bucket in debt.
	g1.Finish(ctx, admission.Usage{Status: 200, PromptTokens: 60, CompletionTokens: 80})
	_, e = admit(b, key, "llava-tiny", nil, "")
	require.NotNil(t, e, "a tenant in token debt is refused at admission")
	require.Equal(t, http.StatusTooManyRequests, e.Status)
	require.Equal(t, "0", e.Header.Get("x-ratelimit-remaining-tokens"))

	big := addTenant(t, a.store, tenant.Tenant{Name: "small", TokensPerMinute: 50})
	g3, e := admit(a, big, "llava-tiny", nil, "")
	require.Nil(t, e)
	err = g3.ChargePrompt(ctx, 51)
	require.ErrorAs(t, err, &ae, "a prompt larger than a minute's budget can never run")
	require.Contains(t, ae.Message, "51")
	g3.Finish(ctx, admission.Usage{Status: 429})

	days, rerr := a.use.Read(ctx, "acme", time.Now(), time.Now())
	require.NoError(t, rerr)
	require.Len(t, days, 1)
	require.Equal(t, int64(1), days[0].Requests, "only the request that ran is billed")
	require.Equal(t, int64(2), days[0].Rejected, "the prompt-token refusal and the debt refusal")
	require.Equal(t, int64(60), days[0].PromptTokens)
	require.Equal(t, int64(80), days[0].CompletionTokens)
}

func TestConcurrencyLeases(t *testing.T) {
	srv := redistest.Start(t)
	// The TTL leaves room for refreshes delayed by a loaded CI machine.
	opt := tenant.Options{LeaseTTL: 2 * time.Second, LeaseRefresh: 200 * time.Millisecond}
	a, b := newGateway(t, srv, opt), newGateway(t, srv, opt)
	key := addTenant(t, a.store, tenant.Tenant{Name: "acme", MaxConcurrent: 1})
	ctx := context.Background()

	held, e := admit(a, key, "llava-tiny", nil, "")
	require.Nil(t, e)
	// Longer than the TTL: only the grant's refreshes keep the slot taken.
	time.Sleep(3 * time.Second)
	_, e = admit(b, key, "llava-tiny", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusTooManyRequests, e.Status)
	require.Equal(t, "concurrency_limit_exceeded", e.Code)
	require.GreaterOrEqual(t, retryAfter(t, e.Header), 1)

	held.Finish(ctx, admission.Usage{Status: 200})
	held.Finish(ctx, admission.Usage{Status: 200}) // a second Finish is ignored
	next, e := admit(b, key, "llava-tiny", nil, "")
	require.Nil(t, e, "Finish frees the slot at once")
	next.Finish(ctx, admission.Usage{Status: 200})
	days, err := a.use.Read(ctx, "acme", time.Now(), time.Now())
	require.NoError(t, err)
	require.Equal(t, int64(2), days[0].Requests, "a repeated Finish is not billed twice")
	require.Equal(t, int64(1), days[0].Rejected)
}

func TestUsageAfterRequests(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{})
	key := addTenant(t, g.store, tenant.Tenant{Name: "acme", TokensPerMinute: 10000})
	ctx := context.Background()
	for i := range 3 {
		gr, e := admit(g, key, "llava-tiny", f(0.1), "")
		require.Nil(t, e)
		require.NoError(t, gr.ChargePrompt(ctx, 100+i))
		status := 200
		if i == 2 {
			status = 500
		}
		gr.Finish(ctx, admission.Usage{Status: status, PromptTokens: 100 + i, ImageTokens: 64, CompletionTokens: 5,
			KVTokensFull: 1000, KVTokensKept: 100, KVBytesFull: 8000, KVBytesKept: 800})
	}
	days, err := g.use.Read(ctx, "acme", time.Now().AddDate(0, 0, -1), time.Now())
	require.NoError(t, err)
	require.Len(t, days, 1)
	d := days[0]
	require.Equal(t, int64(3), d.Requests)
	require.Equal(t, int64(1), d.Errors)
	require.Equal(t, int64(303), d.PromptTokens)
	require.Equal(t, int64(192), d.ImageTokens)
	require.Equal(t, int64(15), d.CompletionTokens)
	require.Equal(t, int64(300), d.KVTokensKept)
	require.Equal(t, int64(2700), d.KVTokensSaved)
	require.Equal(t, int64(2400), d.KVBytesKept)
	require.Equal(t, int64(21600), d.KVBytesSaved)
}

func TestRedisOutageRefusesThenRecovers(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{StoreTimeout: 500 * time.Millisecond, UnavailableRetryAfter: 3 * time.Second,
		LeaseTTL: 2 * time.Second})
	key := addTenant(t, g.store, tenant.Tenant{Name: "acme", RequestsPerMinute: 100, MaxConcurrent: 2})
	ctx := context.Background()
	gr, e := admit(g, key, "llava-tiny", nil, "")
	require.Nil(t, e)
	gr.Finish(ctx, admission.Usage{Status: 200})

	srv.Stop()
	for _, k := range []string{key, "vlc-not-a-key"} {
		_, e = admit(g, k, "llava-tiny", nil, "")
		require.NotNil(t, e, "never admitted without Redis")
		require.Equal(t, http.StatusServiceUnavailable, e.Status)
		require.Equal(t, "3", e.Header.Get("Retry-After"))
	}

	srv.Restart()
	var gr2 admission.Grant
	require.Eventually(t, func() bool {
		gr2, e = admit(g, key, "llava-tiny", nil, "")
		return e == nil
	}, 10*time.Second, 100*time.Millisecond, "the same Admitter works again once Redis is back")
	require.Equal(t, "acme", gr2.Tenant())
	gr2.Finish(ctx, admission.Usage{Status: 200})
	// Both slots are free again: nothing taken before or during the outage
	// outlives its lease (an attempt whose reply was lost while Redis came back
	// may hold a slot until then).
	require.Eventually(t, func() bool {
		g1, e1 := admit(g, key, "llava-tiny", nil, "")
		g2, e2 := admit(g, key, "llava-tiny", nil, "")
		for _, gr := range []admission.Grant{g1, g2} {
			if gr != nil {
				gr.Finish(ctx, admission.Usage{Status: 200})
			}
		}
		return e1 == nil && e2 == nil
	}, 3*time.Second, 100*time.Millisecond, "both concurrency slots are free within one lease TTL")
}

func TestNoRawKeyInRedis(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{})
	ctx := context.Background()
	keys := []string{
		addTenant(t, g.store, tenant.Tenant{Name: "acme", RequestsPerMinute: 10, TokensPerMinute: 1000, MaxConcurrent: 2}),
		addTenant(t, g.store, tenant.Tenant{Name: "globex"}),
	}
	for _, k := range keys {
		gr, e := admit(g, k, "llava-tiny", nil, "")
		require.Nil(t, e)
		require.NoError(t, gr.ChargePrompt(ctx, 10))
		gr.Finish(ctx, admission.Usage{Status: 200, PromptTokens: 10, CompletionTokens: 2})
	}
	dump := dumpRedis(t, g.rdb)
	require.NotEmpty(t, dump)
	for _, k := range keys {
		secret := strings.TrimPrefix(k, tenant.KeyPrefix)
		require.NotContains(t, dump, secret, "the raw key appears nowhere in Redis")
		require.Contains(t, dump, tenant.HashKey(k), "its hash is what is stored")
	}
}

// dumpRedis renders every key and value in the database as text.
func dumpRedis(t *testing.T, rdb *redis.Client) string {
	ctx := context.Background()
	var sb strings.Builder
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		sb.WriteString(k + "\n")
		typ, err := rdb.Type(ctx, k).Result()
		require.NoError(t, err)
		switch typ {
		case "string":
			sb.WriteString(rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				sb.WriteString(f + "=" + v + "\n")
			}
		case "set":
			sb.WriteString(strings.Join(rdb.SMembers(ctx, k).Val(), "\n"))
		case "zset":
			sb.WriteString(strings.Join(rdb.ZRange(ctx, k, 0, -1).Val(), "\n"))
		default:
			t.Fatalf("unexpected Redis type %s of %s", typ, k)
		}
		sb.WriteString("\n")
	}
	require.NoError(t, iter.Err())
	return sb.String()
}

// BenchmarkAdmitFinish measures what tenants add to a request on loopback
// Redis: key lookup, limits, lease, prompt charge, and the Finish accounting.
func BenchmarkAdmitFinish(b *testing.B) {
	// fsync once a second, as a production Redis would, not on every write.
	srv := redistest.Start(b, "--appendfsync", "everysec")
	rdb := srv.Client()
	store := tenant.NewRedisStore(rdb, "vlcache:")
	adm := tenant.NewAdmitter(store, limits.NewRedis(rdb), usage.NewRedis(rdb, "vlcache:", time.Hour),
		tenant.Options{Policies: policies, KeyPrefix: "vlcache:"})
	key, err := tenant.NewKey()
	require.NoError(b, err)
	require.NoError(b, store.Create(context.Background(), &tenant.Tenant{Name: "bench", KeyHashes: []string{tenant.HashKey(key)},
		Models: []string{"m"}, KeepRatio: tenant.Ratio{Default: 0.5, Min: 0.1, Max: 1},
		RequestsPerMinute: 1 << 30, TokensPerMinute: 1 << 30, MaxConcurrent: 1 << 20}))
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		g, err := adm.Admit(ctx, admission.Request{APIKey: key, Model: "m"})
		if err != nil {
			b.Fatal(err)
		}
		if err := g.ChargePrompt(ctx, 100); err != nil {
			b.Fatal(err)
		}
		g.Finish(ctx, admission.Usage{Status: 200, PromptTokens: 100, CompletionTokens: 10})
	}
}
