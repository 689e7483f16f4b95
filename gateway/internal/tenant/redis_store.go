package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps each tenant as JSON under <prefix>tenant:<name>, the set of
// names under <prefix>tenants and one <prefix>key:<hash> -> name entry per key.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix}
}

func (s *RedisStore) tenantKey(name string) string { return s.prefix + "tenant:" + name }
func (s *RedisStore) indexKey(hash string) string  { return s.prefix + "key:" + hash }
func (s *RedisStore) namesKey() string             { return s.prefix + "tenants" }

func (s *RedisStore) ByKeyHash(ctx context.Context, hash string) (*Tenant, error) {
	name, err := s.rdb.Get(ctx, s.indexKey(hash)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("failed to look up a key: %w", err)
	}
	t, err := s.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	// The index is written with the tenant in one transaction; checking the
	// tenant's own list as well keeps a rotated key dead even if an operator
	// edited Redis by hand.
	if !t.hasHash(hash) {
		return nil, ErrNotFound
	}
	return t, nil
}

func (s *RedisStore) Get(ctx context.Context, name string) (*Tenant, error) {
	raw, err := s.rdb.Get(ctx, s.tenantKey(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read tenant %s: %w", name, err)
	}
	var t Tenant
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("tenant %s in Redis is not valid JSON: %w", name, err)
	}
	return &t, nil
}

func (s *RedisStore) List(ctx context.Context) ([]*Tenant, error) {
	names, err := s.rdb.SMembers(ctx, s.namesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("failed to list tenants: %w", err)
	}
	sort.Strings(names)
	out := make([]*Tenant, 0, len(names))
	for _, n := range names {
		t, err := s.Get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// write replaces the tenant (old may be nil) in one MULTI, moving the key index.
func (s *RedisStore) write(ctx context.Context, tx *redis.Tx, old, t *Tenant) error {
	raw, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if old != nil {
			for _, h := range old.KeyHashes {
				p.Del(ctx, s.indexKey(h))
			}
		}
		for _, h := range t.KeyHashes {
			p.Set(ctx, s.indexKey(h), t.Name, 0)
		}
		p.Set(ctx, s.tenantKey(t.Name), raw, 0)
		p.SAdd(ctx, s.namesKey(), t.Name)
		return nil
	})
	return err
}

func (s *RedisStore) Create(ctx context.Context, t *Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, s.tenantKey(t.Name)).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("tenant %s: %w", t.Name, ErrExists)
		}
		return s.write(ctx, tx, nil, t)
	}, s.tenantKey(t.Name))
	if err != nil && !errors.Is(err, ErrExists) {
		return fmt.Errorf("failed to create tenant %s: %w", t.Name, err)
	}
	return err
}

func (s *RedisStore) Update(ctx context.Context, t *Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		old, err := s.Get(ctx, t.Name)
		if err != nil {
			return err
		}
		return s.write(ctx, tx, old, t)
	}, s.tenantKey(t.Name))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("failed to update tenant %s: %w", t.Name, err)
	}
	return err
}

func (s *RedisStore) Delete(ctx context.Context, name string) error {
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		old, err := s.Get(ctx, name)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range old.KeyHashes {
				p.Del(ctx, s.indexKey(h))
			}
			p.Del(ctx, s.tenantKey(name), leaseKey(s.prefix, name),
				redisRatePrefix+requestsKey(s.prefix, name), redisRatePrefix+tokensKey(s.prefix, name))
			p.SRem(ctx, s.namesKey(), name)
			return nil
		})
		return err
	}, s.tenantKey(name))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("failed to delete tenant %s: %w", name, err)
	}
	return err
}
