package tenant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
)

// File is the tenants file: YAML, or JSON (a subset of YAML).
type File struct {
	Tenants []*Tenant `json:"tenants" yaml:"tenants"`
}

// FileStore serves tenants from memory, loaded from a tenants file: the
// single-machine default when no Redis is configured. Writes (from the
// operator command) rewrite the file atomically; a running gateway picks them
// up through Watch.
type FileStore struct {
	path string

	mu     sync.RWMutex
	byName map[string]*Tenant
	byHash map[string]*Tenant
	// loaded identifies the file version in memory; the operator command
	// replaces the file by rename, so a new inode marks a change even when two
	// writes share one mtime tick.
	loaded os.FileInfo
}

// LoadFileStore reads path; a missing file is an empty store that the first
// write creates.
func LoadFileStore(path string) (*FileStore, error) {
	s := &FileStore{path: path}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

func parseFile(raw []byte) (map[string]*Tenant, map[string]*Tenant, error) {
	var f File
	if err := yaml.Unmarshal(raw, &f); err != nil {
		return nil, nil, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	byName, byHash := map[string]*Tenant{}, map[string]*Tenant{}
	var errs []error
	for i, t := range f.Tenants {
		if t == nil {
			continue
		}
		if err := t.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("tenant %d (%s): %w", i, t.Name, err))
			continue
		}
		if byName[t.Name] != nil {
			errs = append(errs, fmt.Errorf("tenant %s appears twice", t.Name))
		}
		byName[t.Name] = t
		for _, h := range t.KeyHashes {
			if o := byHash[h]; o != nil && o != t {
				errs = append(errs, fmt.Errorf("key hash %s belongs to both %s and %s", h, o.Name, t.Name))
			}
			byHash[h] = t
		}
	}
	return byName, byHash, errors.Join(errs...)
}

func (s *FileStore) reload() error {
	st, err := os.Stat(s.path)
	if errors.Is(err, os.ErrNotExist) {
		s.mu.Lock()
		s.byName, s.byHash, s.loaded = map[string]*Tenant{}, map[string]*Tenant{}, nil
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to read tenants file: %w", err)
	}
	raw, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("failed to read tenants file: %w", err)
	}
	// An editor or os.WriteFile truncates before writing, so a poll can see an
	// empty file for a moment; an empty file replacing a loaded one is never
	// taken as "no tenants" (write `tenants: []` to revoke everyone).
	s.mu.RLock()
	hadFile := s.loaded != nil
	s.mu.RUnlock()
	if hadFile && len(bytes.TrimSpace(raw)) == 0 {
		return fmt.Errorf("tenants file %s is empty (being written?); write 'tenants: []' to remove every tenant", s.path)
	}
	byName, byHash, err := parseFile(raw)
	if err != nil {
		return fmt.Errorf("tenants file %s: %w", s.path, err)
	}
	s.mu.Lock()
	s.byName, s.byHash, s.loaded = byName, byHash, st
	s.mu.Unlock()
	return nil
}

// Watch reloads the file when its modification time changes, until ctx ends.
// A file that fails to parse is logged and the previous tenants stay in force.
func (s *FileStore) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(s.path)
		s.mu.RLock()
		prev := s.loaded
		s.mu.RUnlock()
		var changed bool
		if err != nil || prev == nil {
			changed = (err == nil) != (prev != nil)
		} else {
			changed = !os.SameFile(st, prev) || !st.ModTime().Equal(prev.ModTime()) || st.Size() != prev.Size()
		}
		if !changed {
			continue
		}
		if err := s.reload(); err != nil {
			log.Error("keeping the previous tenants", "err", err)
		} else {
			log.Info("reloaded tenants file", "path", s.path)
		}
	}
}

func (s *FileStore) ByKeyHash(_ context.Context, hash string) (*Tenant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t := s.byHash[hash]; t != nil {
		c := *t
		return &c, nil
	}
	return nil, ErrNotFound
}

func (s *FileStore) Get(_ context.Context, name string) (*Tenant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t := s.byName[name]; t != nil {
		c := *t
		return &c, nil
	}
	return nil, ErrNotFound
}

func (s *FileStore) List(_ context.Context) ([]*Tenant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Tenant, 0, len(s.byName))
	for _, t := range s.byName {
		c := *t
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// modify re-reads the file, applies fn to the tenants and writes it back, so
// the file on disk stays the source of truth across processes.
func (s *FileStore) modify(fn func(byName map[string]*Tenant) error) error {
	if err := s.reload(); err != nil {
		return err
	}
	s.mu.Lock()
	byName := map[string]*Tenant{}
	for k, v := range s.byName {
		byName[k] = v
	}
	s.mu.Unlock()
	if err := fn(byName); err != nil {
		return err
	}
	f := File{}
	for _, t := range byName {
		f.Tenants = append(f.Tenants, t)
	}
	sort.Slice(f.Tenants, func(i, j int) bool { return f.Tenants[i].Name < f.Tenants[j].Name })
	raw, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("failed to encode tenants: %w", err)
	}
	if _, _, err := parseFile(raw); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".tenants-*")
	if err != nil {
		return fmt.Errorf("failed to write tenants file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append([]byte("# vlcache tenants: API keys are stored as SHA-256 hashes only.\n"), raw...)); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to write tenants file: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("failed to replace tenants file: %w", err)
	}
	return s.reload()
}

func (s *FileStore) Create(_ context.Context, t *Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	return s.modify(func(byName map[string]*Tenant) error {
		if byName[t.Name] != nil {
			return fmt.Errorf("tenant %s: %w", t.Name, ErrExists)
		}
		byName[t.Name] = t
		return nil
	})
}

func (s *FileStore) Update(_ context.Context, t *Tenant) error {
	if err := t.Validate(); err != nil {
		return err
	}
	return s.modify(func(byName map[string]*Tenant) error {
		if byName[t.Name] == nil {
			return fmt.Errorf("tenant %s: %w", t.Name, ErrNotFound)
		}
		byName[t.Name] = t
		return nil
	})
}

func (s *FileStore) Delete(_ context.Context, name string) error {
	return s.modify(func(byName map[string]*Tenant) error {
		if byName[name] == nil {
			return fmt.Errorf("tenant %s: %w", name, ErrNotFound)
		}
		delete(byName, name)
		return nil
	})
}
