package tenant_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/limits"
	"github.com/vlcache/vlcache/gateway/internal/limits/redistest"
	"github.com/vlcache/vlcache/gateway/internal/tenant"
	"github.com/vlcache/vlcache/gateway/internal/usage"
)

func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := tenant.RunCLI(context.Background(), args, &out, &errOut)
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cli(t, args...)
	require.NoError(t, err, "tenants %v", args)
	return out
}

func TestCLIWithRedis(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t, srv, tenant.Options{})
	r := "--redis-url=" + srv.URL()
	ctx := context.Background()

	key := strings.TrimSpace(mustCLI(t, "create", "acme", r, "--models", "llava-tiny", "--keep-ratio", "0.2",
		"--min-keep-ratio", "0.1", "--max-keep-ratio", "0.4", "--rpm", "50", "--tpm", "5000", "--max-concurrent", "3", "--default-policy", "vlcache"))
	require.True(t, strings.HasPrefix(key, tenant.KeyPrefix), "create prints the key: %q", key)
	_, err := cli(t, "create", "acme", r, "--models", "x")
	require.ErrorIs(t, err, tenant.ErrExists)
	_, err = cli(t, "create", "bad", r, "--models", "x", "--keep-ratio", "0.9", "--max-keep-ratio", "0.5")
	require.ErrorContains(t, err, "min <= default <= max")
	_, err = cli(t, "create", "Bad Name", r, "--models", "x")
	require.Error(t, err)

	list := mustCLI(t, "list", r)
	require.Contains(t, list, "acme")
	require.Contains(t, list, "0.1/0.2/0.4")
	require.NotContains(t, list, key)

	var shown tenant.Tenant
	require.NoError(t, json.Unmarshal([]byte(mustCLI(t, "show", "acme", r)), &shown))
	require.Equal(t, 50, shown.RequestsPerMinute)
	require.Equal(t, []string{tenant.HashKey(key)}, shown.KeyHashes)

	mustCLI(t, "update", "acme", r, "--max-keep-ratio", "0.6")
	require.NoError(t, json.Unmarshal([]byte(mustCLI(t, "show", "acme", r)), &shown))
	require.Equal(t, 0.6, shown.KeepRatio.Max)
	require.Equal(t, 50, shown.RequestsPerMinute, "update leaves other settings alone")

	gr, e := admit(g, key, "llava-tiny", f(0.9), "")
	require.Nil(t, e)
	require.Equal(t, 0.6, gr.KV().KeepRatio, "the updated max applies to the next request")
	require.NoError(t, gr.ChargePrompt(ctx, 40))
	gr.Finish(ctx, admission.Usage{Status: 200, PromptTokens: 40, ImageTokens: 16, CompletionTokens: 4,
		KVTokensFull: 500, KVTokensKept: 300, KVBytesFull: 5000, KVBytesKept: 3000})

	var days []usage.Day
	require.NoError(t, json.Unmarshal([]byte(mustCLI(t, "usage", "acme", r, "--json")), &days))
	require.Len(t, days, 1)
	require.Equal(t, int64(1), days[0].Requests)
	require.Equal(t, int64(40), days[0].PromptTokens)
	require.Equal(t, int64(2000), days[0].KVBytesSaved)
	table := mustCLI(t, "usage", "acme", r)
	require.Contains(t, table, "total")
	require.Contains(t, table, usage.DayKey(time.Now()))

	newKey := strings.TrimSpace(mustCLI(t, "rotate-key", "acme", r))
	require.NotEqual(t, key, newKey)
	_, e = admit(g, key, "llava-tiny", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusUnauthorized, e.Status, "the rotated-out key is dead")
	gr, e = admit(g, newKey, "llava-tiny", nil, "")
	require.Nil(t, e)
	gr.Finish(ctx, admission.Usage{Status: 200})
	third := strings.TrimSpace(mustCLI(t, "rotate-key", "acme", r, "--keep-old"))
	for _, k := range []string{newKey, third} {
		gr, e = admit(g, k, "llava-tiny", nil, "")
		require.Nil(t, e, "--keep-old keeps both keys valid")
		gr.Finish(ctx, admission.Usage{Status: 200})
	}

	mustCLI(t, "delete", "acme", r, "--purge-usage")
	_, e = admit(g, third, "llava-tiny", nil, "")
	require.NotNil(t, e)
	require.Equal(t, http.StatusUnauthorized, e.Status)
	_, err = cli(t, "show", "acme", r)
	require.ErrorIs(t, err, tenant.ErrNotFound)
	require.NotContains(t, dumpRedis(t, g.rdb), "acme", "delete --purge-usage leaves nothing of the tenant")

	_, err = cli(t, "frobnicate", r)
	require.ErrorContains(t, err, "unknown tenants command")
	_, err = cli(t, "list")
	if os.Getenv("VLCACHE_REDIS_URL") == "" && os.Getenv("VLCACHE_TENANTS_FILE") == "" {
		require.ErrorContains(t, err, "no store")
	}
}

func TestTenantsFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tenants.yaml")
	fl := "--tenants-file=" + path
	key := strings.TrimSpace(mustCLI(t, "create", "acme", fl, "--models", "*", "--keep-ratio", "0.3", "--rpm", "2", "--max-concurrent", "1"))
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotContains(t, string(raw), strings.TrimPrefix(key, tenant.KeyPrefix), "the file holds only the hash")
	require.Contains(t, string(raw), tenant.HashKey(key))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	store, err := tenant.LoadFileStore(path)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go store.Watch(ctx, 50*time.Millisecond, slog.Default())
	adm := tenant.NewAdmitter(store, limits.NewMemory(), usage.NewMemory(), tenant.Options{Policies: policies})
	g := &gateway{adm: adm}

	gr, e := admit(g, key, "anything", nil, "")
	require.Nil(t, e)
	require.Equal(t, 0.3, gr.KV().KeepRatio)
	_, e = admit(g, key, "anything", nil, "")
	require.NotNil(t, e, "max_concurrent 1 holds in memory too")
	require.Equal(t, "concurrency_limit_exceeded", e.Code)
	gr.Finish(ctx, admission.Usage{Status: 200})
	gr, e = admit(g, key, "anything", nil, "")
	require.Nil(t, e)
	gr.Finish(ctx, admission.Usage{Status: 200})
	_, e = admit(g, key, "anything", nil, "")
	require.NotNil(t, e, "2 requests/min")
	require.Equal(t, http.StatusTooManyRequests, e.Status)

	// A tenant added by the operator command reaches the running gateway.
	other := strings.TrimSpace(mustCLI(t, "create", "globex", fl, "--models", "llava-tiny"))
	require.Eventually(t, func() bool {
		gr, e := admit(g, other, "llava-tiny", nil, "")
		if e != nil {
			return false
		}
		gr.Finish(ctx, admission.Usage{Status: 200})
		return true
	}, 5*time.Second, 50*time.Millisecond)

	_, err = cli(t, "usage", "acme", fl)
	require.ErrorContains(t, err, "Redis")

	// A broken file keeps the tenants already loaded.
	require.NoError(t, os.WriteFile(path, []byte("tenants: [ {name: BAD"), 0o600))
	time.Sleep(200 * time.Millisecond)
	gr, e = admit(g, other, "llava-tiny", nil, "")
	require.Nil(t, e, "a file that fails to parse does not lock everyone out")
	gr.Finish(ctx, admission.Usage{Status: 200})
	_, err = tenant.LoadFileStore(path)
	require.Error(t, err, "but a gateway will not start on it")
}

func TestTenantsFileJSONAndValidation(t *testing.T) {
	dir := t.TempDir()
	key, err := tenant.NewKey()
	require.NoError(t, err)
	good := `{"tenants": [{"name": "acme", "key_hashes": ["` + tenant.HashKey(key) + `"], "models": ["llava-tiny"],
	  "keep_ratio": {"default": 0.5, "min": 0.2, "max": 0.7}, "requests_per_minute": 5}]}`
	p := filepath.Join(dir, "t.json")
	require.NoError(t, os.WriteFile(p, []byte(good), 0o600))
	s, err := tenant.LoadFileStore(p)
	require.NoError(t, err)
	tn, err := s.ByKeyHash(context.Background(), tenant.HashKey(key))
	require.NoError(t, err)
	require.Equal(t, 5, tn.RequestsPerMinute)

	for name, body := range map[string]string{
		"raw key instead of hash": `{"tenants": [{"name": "a", "key_hashes": ["` + key + `"], "models": ["m"], "keep_ratio": {"default": 1, "min": 1, "max": 1}}]}`,
		"ratio out of range":      `{"tenants": [{"name": "a", "models": ["m"], "keep_ratio": {"default": 2, "min": 1, "max": 2}}]}`,
		"shared key":              `{"tenants": [{"name": "a", "key_hashes": ["` + tenant.HashKey(key) + `"], "models": ["m"], "keep_ratio": {"default": 1, "min": 1, "max": 1}}, {"name": "b", "key_hashes": ["` + tenant.HashKey(key) + `"], "models": ["m"], "keep_ratio": {"default": 1, "min": 1, "max": 1}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
			require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
			_, err := tenant.LoadFileStore(p)
			require.Error(t, err)
			require.NotContains(t, err.Error(), strings.TrimPrefix(key, tenant.KeyPrefix)[8:], "errors do not print keys")
		})
	}
}
