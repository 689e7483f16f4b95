package limits

import (
	"context"
	"math"
	"sync"
	"time"
)

// Memory is the single-process Limiter used when no Redis is configured. It
// implements the same GCRA as the Redis scripts, so a tenant sees the same
// limits either way; everything is lost when the process exits.
type Memory struct {
	mu     sync.Mutex
	now    func() time.Time
	tats   map[string]time.Time
	leases map[string]map[string]time.Time
}

func NewMemory() *Memory {
	return &Memory{now: time.Now, tats: map[string]time.Time{}, leases: map[string]map[string]time.Time{}}
}

func (m *Memory) gcra(key string, rate Rate, cost int, force bool) Result {
	now := m.now()
	emission := time.Minute / time.Duration(rate.PerMinute)
	burst := time.Duration(rate.PerMinute) * emission
	tat, ok := m.tats[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	newTat := tat.Add(time.Duration(cost) * emission)
	allowAt := newTat.Add(-burst)
	diff := now.Sub(allowAt)
	if diff < 0 && !force {
		return Result{Allowed: false, RetryAfter: -diff, ResetAfter: tat.Sub(now)}
	}
	if cost > 0 {
		m.tats[key] = newTat
	}
	res := Result{Allowed: true, RetryAfter: -1, ResetAfter: newTat.Sub(now)}
	if diff < 0 {
		res.RetryAfter = -diff
	} else {
		res.Remaining = int(diff / emission)
	}
	return res
}

func (m *Memory) Allow(_ context.Context, key string, rate Rate, cost int) (Result, error) {
	if rate.Unlimited() {
		return Result{Allowed: true, Remaining: math.MaxInt32}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cost == 0 {
		// Does one more unit fit? Answer without spending it.
		saved, had := m.tats[key]
		res := m.gcra(key, rate, 1, false)
		if had {
			m.tats[key] = saved
		} else {
			delete(m.tats, key)
		}
		if res.Allowed {
			res.Remaining++
		}
		return res, nil
	}
	return m.gcra(key, rate, cost, false), nil
}

func (m *Memory) Debit(_ context.Context, key string, rate Rate, cost int) (Result, error) {
	if rate.Unlimited() || cost <= 0 {
		return Result{Allowed: true, Remaining: math.MaxInt32}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gcra(key, rate, cost, true), nil
}

func (m *Memory) sweep(key string, now time.Time) map[string]time.Time {
	set := m.leases[key]
	if set == nil {
		set = map[string]time.Time{}
		m.leases[key] = set
	}
	for id, deadline := range set {
		if !deadline.After(now) {
			delete(set, id)
		}
	}
	return set
}

func (m *Memory) Acquire(_ context.Context, key string, max int, ttl time.Duration) (Lease, bool, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	set := m.sweep(key, now)
	if len(set) >= max {
		earliest := time.Duration(math.MaxInt64)
		for _, deadline := range set {
			earliest = min(earliest, deadline.Sub(now))
		}
		return Lease{}, false, earliest, nil
	}
	lease := Lease{Key: key, ID: newLeaseID()}
	set[lease.ID] = now.Add(ttl)
	return lease, true, 0, nil
}

func (m *Memory) Refresh(_ context.Context, lease Lease, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(lease.Key, m.now())[lease.ID] = m.now().Add(ttl)
	return nil
}

func (m *Memory) Release(_ context.Context, lease Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases[lease.Key], lease.ID)
	return nil
}

func (m *Memory) Held(_ context.Context, key string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sweep(key, m.now())), nil
}
