package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Redis keeps buckets and leases in Redis so that every gateway sharing it
// enforces one budget. Rates go through redis_rate (GCRA); clocks are Redis's
// own (TIME inside the scripts), so gateways with skewed clocks still agree.
type Redis struct {
	rdb     redis.UniversalClient
	limiter *redis_rate.Limiter
}

// NewRedis wraps a client; the client's pool reconnects by itself after Redis
// comes back, and nothing here caches state across calls.
func NewRedis(rdb redis.UniversalClient) *Redis {
	return &Redis{rdb: rdb, limiter: redis_rate.NewLimiter(rdb)}
}

func perMinute(r Rate) redis_rate.Limit { return redis_rate.PerMinute(r.PerMinute) }

func fromRate(res *redis_rate.Result) Result {
	return Result{Allowed: res.Allowed > 0, Remaining: res.Remaining,
		RetryAfter: res.RetryAfter, ResetAfter: res.ResetAfter}
}

func (l *Redis) Allow(ctx context.Context, key string, rate Rate, cost int) (Result, error) {
	if rate.Unlimited() {
		return Result{Allowed: true, Remaining: math.MaxInt32}, nil
	}
	res, err := l.limiter.AllowN(ctx, key, perMinute(rate), cost)
	if err != nil {
		return Result{}, fmt.Errorf("failed to check rate %s: %w", key, err)
	}
	out := fromRate(res)
	if cost == 0 {
		// A zero-cost check asks whether one more unit fits. redis_rate reports
		// whole remaining units and a retry only for a bucket in debt, so the
		// wait is bounded by the debt plus one emission interval.
		out.Allowed = res.Remaining >= 1
		if !out.Allowed {
			out.RetryAfter = max(res.RetryAfter, 0) + time.Minute/time.Duration(rate.PerMinute)
		}
	}
	return out, nil
}

// debitScript mirrors redis_rate's GCRA state (the "rate:" key holding the
// theoretical arrival time in seconds since 2017-01-01) but always advances it.
var debitScript = redis.NewScript(`
local key = KEYS[1]
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local emission = period / rate
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + (t[2] / 1000000)
local tat = tonumber(redis.call("GET", key) or now)
tat = math.max(tat, now)
local new_tat = tat + emission * cost
local reset_after = new_tat - now
if reset_after > 0 then
  redis.call("SET", key, new_tat, "EX", math.ceil(reset_after))
end
local remaining = (now - (new_tat - emission * burst)) / emission
local retry_after = -1
if remaining < 0 then
  retry_after = -remaining * emission
  remaining = 0
end
return {math.floor(remaining), tostring(retry_after), tostring(reset_after)}
`)

func (l *Redis) Debit(ctx context.Context, key string, rate Rate, cost int) (Result, error) {
	if rate.Unlimited() || cost <= 0 {
		return Result{Allowed: true, Remaining: math.MaxInt32}, nil
	}
	lim := perMinute(rate)
	v, err := debitScript.Run(ctx, l.rdb, []string{"rate:" + key},
		lim.Burst, lim.Rate, lim.Period.Seconds(), cost).Slice()
	if err != nil {
		return Result{}, fmt.Errorf("failed to debit %s: %w", key, err)
	}
	retry, _ := strconv.ParseFloat(v[1].(string), 64)
	reset, _ := strconv.ParseFloat(v[2].(string), 64)
	res := Result{Allowed: true, Remaining: int(v[0].(int64)), ResetAfter: seconds(reset), RetryAfter: -1}
	if retry > 0 {
		res.RetryAfter = seconds(retry)
	}
	return res, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// Leases live in a sorted set per key: member = lease id, score = deadline in
// Redis milliseconds. Expired members are swept on every acquire, so a holder
// that died stops counting once its deadline passes.
var acquireScript = redis.NewScript(`
local key = KEYS[1]
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local t = redis.call("TIME")
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call("ZREMRANGEBYSCORE", key, "-inf", now)
if redis.call("ZCARD", key) >= max then
  local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
  return {0, tonumber(first[2]) - now}
end
redis.call("ZADD", key, now + ttl, ARGV[3])
local last = redis.call("ZRANGE", key, -1, -1, "WITHSCORES")
redis.call("PEXPIREAT", key, tonumber(last[2]) + 1000)
return {1, 0}
`)

var refreshScript = redis.NewScript(`
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local t = redis.call("TIME")
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call("ZADD", key, now + ttl, ARGV[2])
local last = redis.call("ZRANGE", key, -1, -1, "WITHSCORES")
redis.call("PEXPIREAT", key, tonumber(last[2]) + 1000)
return 1
`)

var heldScript = redis.NewScript(`
local t = redis.call("TIME")
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call("ZCOUNT", KEYS[1], "(" .. now, "+inf")
`)

func newLeaseID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (l *Redis) Acquire(ctx context.Context, key string, max int, ttl time.Duration) (Lease, bool, time.Duration, error) {
	lease := Lease{Key: key, ID: newLeaseID()}
	v, err := acquireScript.Run(ctx, l.rdb, []string{key}, max, ttl.Milliseconds(), lease.ID).Slice()
	if err != nil {
		// The script may have run even though its reply was lost; drop the lease
		// if it exists rather than leave it counting until its deadline.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = l.rdb.ZRem(rctx, key, lease.ID).Err()
		cancel()
		return Lease{}, false, 0, fmt.Errorf("failed to acquire a lease on %s: %w", key, err)
	}
	if v[0].(int64) == 0 {
		return Lease{}, false, time.Duration(v[1].(int64)) * time.Millisecond, nil
	}
	return lease, true, 0, nil
}

func (l *Redis) Refresh(ctx context.Context, lease Lease, ttl time.Duration) error {
	if err := refreshScript.Run(ctx, l.rdb, []string{lease.Key}, ttl.Milliseconds(), lease.ID).Err(); err != nil {
		return fmt.Errorf("failed to refresh lease on %s: %w", lease.Key, err)
	}
	return nil
}

func (l *Redis) Release(ctx context.Context, lease Lease) error {
	if err := l.rdb.ZRem(ctx, lease.Key, lease.ID).Err(); err != nil {
		return fmt.Errorf("failed to release lease on %s: %w", lease.Key, err)
	}
	return nil
}

func (l *Redis) Held(ctx context.Context, key string) (int, error) {
	n, err := heldScript.Run(ctx, l.rdb, []string{key}).Int()
	if err != nil {
		return 0, fmt.Errorf("failed to count leases on %s: %w", key, err)
	}
	return n, nil
}
