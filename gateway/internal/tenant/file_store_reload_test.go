package tenant

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A poll that lands between an editor's truncate and write sees an empty
// file; it must not lock every tenant out.
func TestReloadKeepsTenantsWhenTheFileIsMomentarilyEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	key, err := NewKey()
	require.NoError(t, err)
	body := "tenants:\n  - name: acme\n    key_hashes: [\"" + HashKey(key) + "\"]\n    models: [\"*\"]\n    keep_ratio: {default: 0.5, min: 0.1, max: 1}\n"
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	s, err := LoadFileStore(path)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(path, nil, 0o600))
	require.ErrorContains(t, s.reload(), "empty")
	got, err := s.ByKeyHash(context.Background(), HashKey(key))
	require.NoError(t, err)
	require.Equal(t, "acme", got.Name)

	require.NoError(t, os.WriteFile(path, []byte("tenants: []\n"), 0o600))
	require.NoError(t, s.reload())
	_, err = s.ByKeyHash(context.Background(), HashKey(key))
	require.ErrorIs(t, err, ErrNotFound, "an explicit empty list does remove everyone")
}
