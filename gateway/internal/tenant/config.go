package tenant

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vlcache/vlcache/gateway/internal/limits"
	"github.com/vlcache/vlcache/gateway/internal/usage"
)

// Config selects and tunes the tenant backend. With RedisURL set, tenants,
// limits and usage live in Redis; otherwise with TenantsFile set, they live in
// this process (tenants loaded from the file); with neither, the gateway keeps
// its open admission.
type Config struct {
	RedisURL              string
	RedisPrefix           string
	TenantsFile           string
	TenantsReload         time.Duration
	LeaseTTL              time.Duration
	UsageRetention        time.Duration
	UnavailableRetryAfter time.Duration
	StoreTimeout          time.Duration
	// DefaultPolicy applies to tenants that name no default policy (the
	// gateway's -default-policy); not a flag of its own.
	DefaultPolicy string
}

// Enabled reports whether tenants are configured at all.
func (c Config) Enabled() bool { return c.RedisURL != "" || c.TenantsFile != "" }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// RegisterFlags adds the tenant flags; the Redis URL and the tenants file
// default to VLCACHE_REDIS_URL and VLCACHE_TENANTS_FILE so secrets in the URL
// need not appear on a command line.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.RedisURL, "redis-url", envOr("VLCACHE_REDIS_URL", ""),
		"Redis URL (redis://[user:pass@]host:port/db) for tenants, limits and usage shared by all gateways; env VLCACHE_REDIS_URL")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", envOr("VLCACHE_REDIS_PREFIX", "vlcache:"), "prefix of every Redis key this gateway writes")
	fs.StringVar(&c.TenantsFile, "tenants-file", envOr("VLCACHE_TENANTS_FILE", ""),
		"tenants file (YAML or JSON) used when no Redis URL is set: limits and usage then live in this process only; env VLCACHE_TENANTS_FILE")
	fs.DurationVar(&c.TenantsReload, "tenants-reload", 5*time.Second, "how often the tenants file is checked for changes")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 30*time.Second, "concurrency lease lifetime without refresh: how long a dead gateway's streams keep counting")
	fs.DurationVar(&c.UsageRetention, "usage-retention", 400*24*time.Hour, "how long daily usage stays in Redis")
	fs.DurationVar(&c.UnavailableRetryAfter, "redis-retry-after", 2*time.Second, "retry-after sent with 503 while Redis is unreachable")
	fs.DurationVar(&c.StoreTimeout, "redis-timeout", 2*time.Second, "timeout of each Redis call on the request path")
}

// Service is an opened tenant backend: the Admitter plus what operators and
// readiness checks need.
type Service struct {
	*Admitter
	Store Store
	Usage usage.Store
	rdb   redis.UniversalClient
	stop  context.CancelFunc
}

// Open connects the backend chosen by cfg. It does not fail when Redis is down
// at start: requests get 503 until it is reachable, and Ready reports it.
func Open(ctx context.Context, cfg Config, policies []string, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	opt := Options{Policies: policies, DefaultPolicy: cfg.DefaultPolicy, LeaseTTL: cfg.LeaseTTL, UnavailableRetryAfter: cfg.UnavailableRetryAfter,
		StoreTimeout: cfg.StoreTimeout, KeyPrefix: cfg.RedisPrefix, Log: log}
	switch {
	case cfg.RedisURL != "":
		ropt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("failed to parse the Redis URL: %w", err)
		}
		rdb := redis.NewClient(ropt)
		store := NewRedisStore(rdb, cfg.RedisPrefix)
		use := usage.NewRedis(rdb, cfg.RedisPrefix, cfg.UsageRetention)
		return &Service{Admitter: NewAdmitter(store, limits.NewRedis(rdb), use, opt), Store: store, Usage: use, rdb: rdb,
			stop: func() {}}, nil
	case cfg.TenantsFile != "":
		store, err := LoadFileStore(cfg.TenantsFile)
		if err != nil {
			return nil, err
		}
		wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		reload := cfg.TenantsReload
		if reload <= 0 {
			reload = 5 * time.Second
		}
		go store.Watch(wctx, reload, log)
		use := usage.NewMemory()
		return &Service{Admitter: NewAdmitter(store, limits.NewMemory(), use, opt), Store: store, Usage: use, stop: stop}, nil
	}
	return nil, errors.New("tenants are not configured: set a Redis URL or a tenants file")
}

// Ready reports whether the tenant store can be reached.
func (s *Service) Ready(ctx context.Context) error {
	if s.rdb == nil {
		return nil
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis unreachable: %w", err)
	}
	return nil
}

func (s *Service) Close() error {
	s.stop()
	if s.rdb != nil {
		return s.rdb.Close()
	}
	return nil
}
