// Package limits enforces per-tenant rates (GCRA over requests and tokens per
// minute) and concurrency (leases with deadlines). Redis backs them when
// several gateways share the limits; Memory backs them on one machine.
package limits

import (
	"context"
	"time"
)

// Rate is a budget of units per minute; the burst equals the per-minute
// amount, so an idle tenant may spend a whole minute's budget at once.
type Rate struct {
	PerMinute int
}

// Unlimited reports whether no limit applies (0 or negative).
func (r Rate) Unlimited() bool { return r.PerMinute <= 0 }

// Result describes a bucket after an Allow or Debit.
type Result struct {
	Allowed    bool
	Remaining  int           // units that could be spent right now
	RetryAfter time.Duration // when Allowed is false: wait this long before the same cost fits; <0 when it never will
	ResetAfter time.Duration // until the bucket is full again
}

// Lease is a held concurrency slot.
type Lease struct {
	Key string
	ID  string
}

// Limiter is what admission needs from a rate and concurrency store. All
// methods are safe for concurrent use, and for use by several processes when
// the store is shared.
type Limiter interface {
	// Allow spends cost units when they fit; cost 0 only reports the state.
	Allow(ctx context.Context, key string, rate Rate, cost int) (Result, error)
	// Debit spends cost units even when they do not fit, so the bucket can go
	// into debt: used for completion tokens, which are known only after the work
	// is done and must still slow the tenant down.
	Debit(ctx context.Context, key string, rate Rate, cost int) (Result, error)
	// Acquire takes one of max slots under key for ttl. ok is false when all
	// are held; retryAfter then says when the earliest lease expires at the
	// latest.
	Acquire(ctx context.Context, key string, max int, ttl time.Duration) (lease Lease, ok bool, retryAfter time.Duration, err error)
	// Refresh moves a lease's deadline to now+ttl; a lease that already expired
	// is taken again so that a live stream stays counted.
	Refresh(ctx context.Context, lease Lease, ttl time.Duration) error
	// Release frees a lease; releasing twice is harmless.
	Release(ctx context.Context, lease Lease) error
	// Held counts live leases under key.
	Held(ctx context.Context, key string) (int, error)
}
