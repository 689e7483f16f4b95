// Package usage accumulates what each tenant consumed per UTC day: requests,
// tokens and the KV cache kept and saved. Redis holds it for operators and
// billing; Memory holds it for a single process.
package usage

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Record is one request's consumption, or a day's sum. Field tags are the
// Redis hash fields and the JSON names operators see.
type Record struct {
	Requests         int64 `json:"requests"`
	Errors           int64 `json:"errors"`   // admitted requests that ended with status >= 400
	Rejected         int64 `json:"rejected"` // refused by admission (429, 403) for a known tenant
	PromptTokens     int64 `json:"prompt_tokens"`
	ImageTokens      int64 `json:"image_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	KVTokensFull     int64 `json:"kv_tokens_full"`
	KVTokensKept     int64 `json:"kv_tokens_kept"`
	KVTokensSaved    int64 `json:"kv_tokens_saved"`
	KVBytesFull      int64 `json:"kv_bytes_full"`
	KVBytesKept      int64 `json:"kv_bytes_kept"`
	KVBytesSaved     int64 `json:"kv_bytes_saved"`
}

// Day is a tenant's Record for one UTC date (YYYY-MM-DD).
type Day struct {
	Date string `json:"date"`
	Record
}

// Store accumulates and reads usage.
type Store interface {
	Add(ctx context.Context, tenant string, at time.Time, rec Record) error
	// Read returns the days in [from, to] (inclusive, UTC dates) that have usage.
	Read(ctx context.Context, tenant string, from, to time.Time) ([]Day, error)
	Delete(ctx context.Context, tenant string) error
}

// DayKey is the UTC date a moment is billed to.
func DayKey(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// fields lists (json name, pointer) pairs so both stores walk one list.
func (r *Record) fields() []struct {
	name string
	v    *int64
} {
	rv := reflect.ValueOf(r).Elem()
	rt := rv.Type()
	out := make([]struct {
		name string
		v    *int64
	}, rt.NumField())
	for i := range rt.NumField() {
		out[i].name = rt.Field(i).Tag.Get("json")
		out[i].v = rv.Field(i).Addr().Interface().(*int64)
	}
	return out
}

// Add sums o into r.
func (r *Record) Add(o Record) {
	of := o.fields()
	for i, f := range r.fields() {
		*f.v += *of[i].v
	}
}

func days(from, to time.Time) []string {
	var out []string
	from = from.UTC().Truncate(24 * time.Hour)
	for d := from; !d.After(to.UTC()); d = d.Add(24 * time.Hour) {
		out = append(out, DayKey(d))
	}
	return out
}

// Redis keeps one hash per tenant and day under <prefix>usage:<tenant>:<date>,
// expiring after Retention so the keyspace stays bounded.
type Redis struct {
	rdb       redis.UniversalClient
	prefix    string
	Retention time.Duration
}

func NewRedis(rdb redis.UniversalClient, prefix string, retention time.Duration) *Redis {
	return &Redis{rdb: rdb, prefix: prefix, Retention: retention}
}

func (s *Redis) key(tenant, date string) string { return s.prefix + "usage:" + tenant + ":" + date }

func (s *Redis) Add(ctx context.Context, tenant string, at time.Time, rec Record) error {
	key := s.key(tenant, DayKey(at))
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, f := range rec.fields() {
			if *f.v != 0 {
				p.HIncrBy(ctx, key, f.name, *f.v)
			}
		}
		if s.Retention > 0 {
			p.Expire(ctx, key, s.Retention)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to record usage of %s: %w", tenant, err)
	}
	return nil
}

func (s *Redis) Read(ctx context.Context, tenant string, from, to time.Time) ([]Day, error) {
	dates := days(from, to)
	cmds := make([]*redis.MapStringStringCmd, len(dates))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range dates {
			cmds[i] = p.HGetAll(ctx, s.key(tenant, d))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read usage of %s: %w", tenant, err)
	}
	var out []Day
	for i, cmd := range cmds {
		m := cmd.Val()
		if len(m) == 0 {
			continue
		}
		day := Day{Date: dates[i]}
		for _, f := range day.fields() {
			if v, ok := m[f.name]; ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("usage field %s of %s on %s is not a number: %q", f.name, tenant, dates[i], v)
				}
				*f.v = n
			}
		}
		out = append(out, day)
	}
	return out, nil
}

func (s *Redis) Delete(ctx context.Context, tenant string) error {
	iter := s.rdb.Scan(ctx, 0, s.prefix+"usage:"+tenant+":*", 256).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("failed to list usage of %s: %w", tenant, err)
	}
	if len(keys) > 0 {
		if err := s.rdb.Del(ctx, keys...).Err(); err != nil {
			return fmt.Errorf("failed to delete usage of %s: %w", tenant, err)
		}
	}
	return nil
}

// Memory keeps usage in process memory (tenants-file mode); it is lost on
// restart.
type Memory struct {
	mu   sync.Mutex
	data map[string]map[string]*Record
}

func NewMemory() *Memory { return &Memory{data: map[string]map[string]*Record{}} }

func (s *Memory) Add(_ context.Context, tenant string, at time.Time, rec Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	byDay := s.data[tenant]
	if byDay == nil {
		byDay = map[string]*Record{}
		s.data[tenant] = byDay
	}
	d := DayKey(at)
	if byDay[d] == nil {
		byDay[d] = &Record{}
	}
	byDay[d].Add(rec)
	return nil
}

func (s *Memory) Read(_ context.Context, tenant string, from, to time.Time) ([]Day, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Day
	for _, d := range days(from, to) {
		if r := s.data[tenant][d]; r != nil {
			out = append(out, Day{Date: d, Record: *r})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Date < out[j].Date })
	return out, nil
}

func (s *Memory) Delete(_ context.Context, tenant string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data, tenant)
	return nil
}
