package usage_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/limits/redistest"
	"github.com/vlcache/vlcache/gateway/internal/usage"
)

func TestStoresSumPerTenantAndDay(t *testing.T) {
	srv := redistest.Start(t)
	stores := map[string]usage.Store{
		"redis":  usage.NewRedis(srv.Client(), "t:", 48*time.Hour),
		"memory": usage.NewMemory(),
	}
	ctx := context.Background()
	day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute) // next UTC day
	for name, s := range stores {
		t.Run(name, func(t *testing.T) {
			req := usage.Record{Requests: 1, PromptTokens: 120, ImageTokens: 100, CompletionTokens: 7,
				KVTokensFull: 1000, KVTokensKept: 100, KVTokensSaved: 900, KVBytesFull: 4000, KVBytesKept: 400, KVBytesSaved: 3600}
			require.NoError(t, s.Add(ctx, "acme", day1, req))
			require.NoError(t, s.Add(ctx, "acme", day1, req))
			require.NoError(t, s.Add(ctx, "acme", day2, usage.Record{Rejected: 1}))
			require.NoError(t, s.Add(ctx, "globex", day1, req))

			days, err := s.Read(ctx, "acme", day1.AddDate(0, 0, -3), day2)
			require.NoError(t, err)
			require.Len(t, days, 2, "only days with usage are listed")
			require.Equal(t, "2026-03-01", days[0].Date)
			require.Equal(t, int64(2), days[0].Requests)
			require.Equal(t, int64(240), days[0].PromptTokens)
			require.Equal(t, int64(200), days[0].ImageTokens)
			require.Equal(t, int64(14), days[0].CompletionTokens)
			require.Equal(t, int64(1800), days[0].KVTokensSaved)
			require.Equal(t, int64(800), days[0].KVBytesKept)
			require.Equal(t, int64(7200), days[0].KVBytesSaved)
			require.Equal(t, "2026-03-02", days[1].Date)
			require.Equal(t, int64(1), days[1].Rejected)
			require.Zero(t, days[1].Requests)

			other, err := s.Read(ctx, "globex", day1, day1)
			require.NoError(t, err)
			require.Len(t, other, 1)
			require.Equal(t, int64(1), other[0].Requests, "tenants are counted apart")

			require.NoError(t, s.Delete(ctx, "acme"))
			days, err = s.Read(ctx, "acme", day1, day2)
			require.NoError(t, err)
			require.Empty(t, days)
		})
	}
}

func TestRedisUsageExpires(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	s := usage.NewRedis(rdb, "t:", time.Hour)
	ctx := context.Background()
	now := time.Now()
	require.NoError(t, s.Add(ctx, "acme", now, usage.Record{Requests: 1}))
	ttl, err := rdb.TTL(ctx, "t:usage:acme:"+usage.DayKey(now)).Result()
	require.NoError(t, err)
	require.Positive(t, ttl, "daily usage keys carry the retention as TTL")
	require.LessOrEqual(t, ttl, time.Hour)
}
