package limits_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/limits"
	"github.com/vlcache/vlcache/gateway/internal/limits/redistest"
)

// A child process started by TestLeaseLapsesAfterHolderIsKilled: it takes a
// lease, keeps refreshing it like a live stream, and waits to be killed.
func TestMain(m *testing.M) {
	if addr := os.Getenv("LIMITS_TEST_LEASE_HOLDER"); addr != "" {
		holdLease(addr)
		return
	}
	os.Exit(m.Run())
}

const holderTTL = 2500 * time.Millisecond

func holdLease(addr string) {
	ctx := context.Background()
	l := limits.NewRedis(redis.NewClient(&redis.Options{Addr: addr}))
	lease, ok, _, err := l.Acquire(ctx, "test:lease:killed", 1, holderTTL)
	if err != nil || !ok {
		fmt.Println("failed", ok, err)
		os.Exit(1)
	}
	fmt.Println("held")
	for {
		time.Sleep(holderTTL / 5)
		if err := l.Refresh(ctx, lease, holderTTL); err != nil {
			fmt.Println("refresh failed", err)
		}
	}
}

func limiters(t *testing.T) map[string][2]limits.Limiter {
	srv := redistest.Start(t)
	mem := limits.NewMemory()
	return map[string][2]limits.Limiter{
		// Two clients with their own connection pools stand for two gateways.
		"redis":  {limits.NewRedis(srv.Client()), limits.NewRedis(srv.Client())},
		"memory": {mem, mem},
	}
}

func TestRateIsSharedByAllInstances(t *testing.T) {
	ctx := context.Background()
	for name, pair := range limiters(t) {
		t.Run(name, func(t *testing.T) {
			rate := limits.Rate{PerMinute: 5}
			allowed := 0
			for i := range 8 {
				res, err := pair[i%2].Allow(ctx, "test:req:"+name, rate, 1)
				require.NoError(t, err)
				if res.Allowed {
					allowed++
					require.Equal(t, 5-allowed, res.Remaining, "remaining after %d requests", allowed)
				} else {
					require.Positive(t, res.RetryAfter, "a refusal says when to retry")
					require.Zero(t, res.Remaining)
				}
			}
			require.Equal(t, 5, allowed, "the burst is one minute's budget, shared by both instances")
			peek, err := pair[0].Allow(ctx, "test:req:"+name, rate, 0)
			require.NoError(t, err)
			require.False(t, peek.Allowed, "an exhausted bucket reports no room")
			other, err := pair[1].Allow(ctx, "test:req:other-"+name, rate, 1)
			require.NoError(t, err)
			require.True(t, other.Allowed, "another key has its own budget")
		})
	}
}

func TestDebitGoesIntoDebt(t *testing.T) {
	ctx := context.Background()
	for name, pair := range limiters(t) {
		t.Run(name, func(t *testing.T) {
			rate := limits.Rate{PerMinute: 100}
			key := "test:tok:" + name
			res, err := pair[0].Allow(ctx, key, rate, 60)
			require.NoError(t, err)
			require.True(t, res.Allowed)
			// 60 spent; 90 more do not fit, but completion tokens are charged anyway.
			res, err = pair[1].Debit(ctx, key, rate, 90)
			require.NoError(t, err)
			require.Zero(t, res.Remaining)
			require.Positive(t, res.RetryAfter)
			peek, err := pair[0].Allow(ctx, key, rate, 0)
			require.NoError(t, err)
			require.False(t, peek.Allowed, "a bucket in debt admits nothing")
			require.Greater(t, peek.RetryAfter, 5*time.Second, "50 tokens of debt at 100/min take about 30s to repay")
			one, err := pair[1].Allow(ctx, key, rate, 1)
			require.NoError(t, err)
			require.False(t, one.Allowed)
		})
	}
}

func TestDebitIsSeenByRedisRate(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := limits.NewRedis(rdb)
	_, err := l.Debit(ctx, "test:interop", limits.Rate{PerMinute: 10}, 10)
	require.NoError(t, err)
	res, err := redis_rate.NewLimiter(rdb).Allow(ctx, "test:interop", redis_rate.PerMinute(10))
	require.NoError(t, err)
	require.Zero(t, res.Allowed, "redis_rate reads the state our debit script wrote")
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	for name, pair := range limiters(t) {
		t.Run(name, func(t *testing.T) {
			key := "test:lease:" + name
			ttl := time.Minute
			a, ok, _, err := pair[0].Acquire(ctx, key, 2, ttl)
			require.NoError(t, err)
			require.True(t, ok)
			_, ok, _, err = pair[1].Acquire(ctx, key, 2, ttl)
			require.NoError(t, err)
			require.True(t, ok)
			_, ok, retry, err := pair[0].Acquire(ctx, key, 2, ttl)
			require.NoError(t, err)
			require.False(t, ok, "two of two slots are held")
			require.Positive(t, retry)
			require.LessOrEqual(t, retry, ttl)
			n, err := pair[1].Held(ctx, key)
			require.NoError(t, err)
			require.Equal(t, 2, n)
			require.NoError(t, pair[1].Release(ctx, a))
			require.NoError(t, pair[1].Release(ctx, a), "releasing twice is harmless")
			_, ok, _, err = pair[0].Acquire(ctx, key, 2, ttl)
			require.NoError(t, err)
			require.True(t, ok, "a released slot is free again")
		})
	}
}

func TestLeaseExpiresWithoutRefresh(t *testing.T) {
	ctx := context.Background()
	for name, pair := range limiters(t) {
		t.Run(name, func(t *testing.T) {
			key := "test:lease:expiry:" + name
			_, ok, _, err := pair[0].Acquire(ctx, key, 1, 300*time.Millisecond)
			require.NoError(t, err)
			require.True(t, ok)
			require.Eventually(t, func() bool {
				_, ok, _, err := pair[1].Acquire(ctx, key, 1, time.Minute)
				return err == nil && ok
			}, 10*time.Second, 50*time.Millisecond, "an unrefreshed lease lapses")
		})
	}
}

func TestLeaseLapsesAfterHolderIsKilled(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	l := limits.NewRedis(srv.Client())
	key := "test:lease:killed"

	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), "LIMITS_TEST_LEASE_HOLDER="+srv.Addr())
	out, err := holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, holder.Start())
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "held", strings.TrimSpace(line))

	// Well past the TTL the live holder still owns the slot: refreshes work.
	time.Sleep(2 * holderTTL)
	_, ok, _, err := l.Acquire(ctx, key, 1, time.Minute)
	require.NoError(t, err)
	require.False(t, ok, "the refreshed lease of a live holder still counts")

	require.NoError(t, holder.Process.Kill())
	_ = holder.Wait()
	require.Eventually(t, func() bool {
		_, ok, _, err := l.Acquire(ctx, key, 1, time.Minute)
		return err == nil && ok
	}, 15*time.Second, 100*time.Millisecond, "the SIGKILLed holder's lease lapses")
}
