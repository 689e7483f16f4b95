// Package tenant maps API keys to tenants and admits their requests: the
// multi-tenant admission.Admitter, with tenants in Redis (shared by every
// gateway) or in a tenants file (one machine), rates and concurrency from
// internal/limits and usage from internal/usage.
package tenant

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
)

// KeyPrefix starts every key this gateway issues, so leaked keys are easy to
// recognise in logs and by secret scanners.
const KeyPrefix = "vlc-"

// HashPrefix marks the hash scheme in stored hashes.
const HashPrefix = "sha256:"

// Ratio is a tenant's keep-ratio range: the fraction of the prompt's KV cache
// kept. Requests are clamped to [Min, Max]; Default applies when none is asked.
type Ratio struct {
	Default float64 `json:"default" yaml:"default"`
	Min     float64 `json:"min" yaml:"min"`
	Max     float64 `json:"max" yaml:"max"`
}

// Tenant is one customer: who they are, what they may use and how fast.
type Tenant struct {
	Name string `json:"name" yaml:"name"`
	// KeyHashes are "sha256:<hex>" of the tenant's API keys; the keys
	// themselves are never stored.
	KeyHashes []string `json:"key_hashes" yaml:"key_hashes"`
	// Models the tenant may call; "*" allows all.
	Models []string `json:"models" yaml:"models"`
	// DefaultPolicy is the KV cache policy when the request names none;
	// empty means the model's default.
	DefaultPolicy string `json:"default_policy,omitempty" yaml:"default_policy,omitempty"`
	// Policies the tenant may ask for; empty allows every policy the gateway knows.
	Policies  []string `json:"policies,omitempty" yaml:"policies,omitempty"`
	KeepRatio Ratio    `json:"keep_ratio" yaml:"keep_ratio"`
	// Limits; 0 means unlimited.
	RequestsPerMinute int       `json:"requests_per_minute" yaml:"requests_per_minute"`
	TokensPerMinute   int       `json:"tokens_per_minute" yaml:"tokens_per_minute"`
	MaxConcurrent     int       `json:"max_concurrent" yaml:"max_concurrent"`
	CreatedAt         time.Time `json:"created_at,omitzero" yaml:"created_at,omitempty"`
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether a tenant name is usable in Redis keys and labels.
func ValidName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("tenant name %q must match %s", name, namePattern)
	}
	return nil
}

// Validate checks a tenant's settings; every problem is reported at once.
func (t *Tenant) Validate() error {
	var errs []error
	if err := ValidName(t.Name); err != nil {
		errs = append(errs, err)
	}
	r := t.KeepRatio
	for _, v := range []struct {
		name string
		v    float64
	}{{"min", r.Min}, {"default", r.Default}, {"max", r.Max}} {
		if math.IsNaN(v.v) || v.v <= 0 || v.v > 1 {
			errs = append(errs, fmt.Errorf("keep_ratio.%s %v must lie in (0, 1]", v.name, v.v))
		}
	}
	if !(r.Min <= r.Default && r.Default <= r.Max) {
		errs = append(errs, fmt.Errorf("keep_ratio must satisfy min <= default <= max, got %v <= %v <= %v", r.Min, r.Default, r.Max))
	}
	if len(t.Models) == 0 {
		errs = append(errs, errors.New(`models must list at least one model (or "*")`))
	}
	if t.RequestsPerMinute < 0 || t.TokensPerMinute < 0 || t.MaxConcurrent < 0 {
		errs = append(errs, errors.New("requests_per_minute, tokens_per_minute and max_concurrent must be >= 0 (0 = unlimited)"))
	}
	if t.DefaultPolicy != "" && len(t.Policies) > 0 && !slices.Contains(t.Policies, t.DefaultPolicy) {
		errs = append(errs, fmt.Errorf("default_policy %q is not among policies %v", t.DefaultPolicy, t.Policies))
	}
	for _, h := range t.KeyHashes {
		if !validHash(h) {
			// Only a prefix: an operator who pasted a raw key here must not see it
			// copied into logs.
			errs = append(errs, fmt.Errorf("key hash %q... is not %s followed by 64 hex digits", h[:min(len(h), 10)], HashPrefix))
		}
	}
	return errors.Join(errs...)
}

// AllowsModel reports whether the tenant may call model.
func (t *Tenant) AllowsModel(model string) bool {
	return slices.Contains(t.Models, "*") || slices.Contains(t.Models, model)
}

// Clamp applies the tenant's range to a requested ratio (nil: the default).
func (t *Tenant) Clamp(requested *float64) float64 {
	if requested == nil {
		return t.KeepRatio.Default
	}
	return min(max(*requested, t.KeepRatio.Min), t.KeepRatio.Max)
}

// NewKey makes a random API key with 256 bits of entropy. Because keys are
// random rather than chosen by people, an unsalted SHA-256 cannot be reversed
// by guessing, and it lets a lookup go straight to the tenant.
func NewKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("failed to read random bytes for a key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashKey is the stored form of a key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return HashPrefix + hex.EncodeToString(sum[:])
}

func validHash(h string) bool {
	rest, ok := strings.CutPrefix(h, HashPrefix)
	if !ok || len(rest) != 64 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}

// hasHash compares in constant time, so a lookup's timing says nothing about
// how close a guessed key came.
func (t *Tenant) hasHash(h string) bool {
	found := false
	for _, k := range t.KeyHashes {
		if subtle.ConstantTimeCompare([]byte(k), []byte(h)) == 1 {
			found = true
		}
	}
	return found
}

// Redis keys of a tenant's limits, shared by the Admitter (which writes them)
// and RedisStore.Delete (which removes them so a re-created tenant starts fresh).
func requestsKey(prefix, name string) string { return prefix + "rl:req:" + name }
func tokensKey(prefix, name string) string   { return prefix + "rl:tok:" + name }
func leaseKey(prefix, name string) string    { return prefix + "lease:" + name }

// redisRatePrefix is the prefix redis_rate puts before every key it writes.
const redisRatePrefix = "rate:"
