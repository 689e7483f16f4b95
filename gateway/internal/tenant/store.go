package tenant

import (
	"context"
	"errors"
)

// ErrNotFound is returned for an unknown tenant or key.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a tenant whose name is taken.
var ErrExists = errors.New("already exists")

// Store holds tenants and the index from key hash to tenant.
type Store interface {
	// ByKeyHash finds the tenant owning a key hash (ErrNotFound otherwise).
	ByKeyHash(ctx context.Context, hash string) (*Tenant, error)
	Get(ctx context.Context, name string) (*Tenant, error)
	List(ctx context.Context) ([]*Tenant, error)
	// Create adds a new tenant (ErrExists when the name is taken).
	Create(ctx context.Context, t *Tenant) error
	// Update replaces an existing tenant, keys included (ErrNotFound when absent).
	Update(ctx context.Context, t *Tenant) error
	Delete(ctx context.Context, name string) error
}
