package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vlcache/vlcache/gateway/internal/usage"
)

const cliUsage = `usage: vlcache-gateway tenants <command> [flags]

commands:
  create NAME     add a tenant and print its API key (shown once)
  update NAME     change a tenant's settings (only the flags given)
  list            list tenants
  show NAME       print a tenant as JSON (key hashes only)
  usage NAME      daily usage (--days N, or --from/--to YYYY-MM-DD)
  rotate-key NAME replace the tenant's keys with a new one (printed once; --keep-old keeps the old ones)
  delete NAME     remove a tenant and its keys (--purge-usage also drops its usage)

store (every command): --redis-url URL (env VLCACHE_REDIS_URL) or --tenants-file PATH
(env VLCACHE_TENANTS_FILE); --redis-prefix (default "vlcache:").
Run "vlcache-gateway tenants <command> -h" for a command's flags.
`

type cliStore struct {
	store Store
	usage usage.Store // nil in tenants-file mode: usage lives in the gateway process
	close func()
}

func storeFlags(fs *flag.FlagSet) *Config {
	c := &Config{}
	fs.StringVar(&c.RedisURL, "redis-url", envOr("VLCACHE_REDIS_URL", ""), "Redis URL; env VLCACHE_REDIS_URL")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", envOr("VLCACHE_REDIS_PREFIX", "vlcache:"), "prefix of the Redis keys")
	fs.StringVar(&c.TenantsFile, "tenants-file", envOr("VLCACHE_TENANTS_FILE", ""), "tenants file when no Redis is used; env VLCACHE_TENANTS_FILE")
	return c
}

func openCLIStore(c *Config) (*cliStore, error) {
	switch {
	case c.RedisURL != "":
		opt, err := redis.ParseURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("failed to parse the Redis URL: %w", err)
		}
		rdb := redis.NewClient(opt)
		return &cliStore{store: NewRedisStore(rdb, c.RedisPrefix), usage: usage.NewRedis(rdb, c.RedisPrefix, 0),
			close: func() { rdb.Close() }}, nil
	case c.TenantsFile != "":
		s, err := LoadFileStore(c.TenantsFile)
		if err != nil {
			return nil, err
		}
		return &cliStore{store: s, close: func() {}}, nil
	}
	return nil, errors.New("no store: pass --redis-url (or VLCACHE_REDIS_URL) or --tenants-file (or VLCACHE_TENANTS_FILE)")
}

// parse accepts flags before and after the positional NAME, as operators type them.
func parse(fs *flag.FlagSet, args []string, wantName bool) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if !wantName {
		if fs.NArg() > 0 {
			return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
		return "", nil
	}
	if fs.NArg() == 0 {
		return "", errors.New("missing tenant NAME")
	}
	name := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return name, ValidName(name)
}

type settingFlags struct {
	models, policies, defaultPolicy string
	ratio, minRatio, maxRatio       float64
	rpm, tpm, concurrent            int
}

func (s *settingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.models, "models", "", `comma-separated model names the tenant may call, or "*" for all (required on create)`)
	fs.StringVar(&s.policies, "policies", "", "comma-separated KV cache policies the tenant may ask for (empty: all)")
	fs.StringVar(&s.defaultPolicy, "default-policy", "", "KV cache policy when a request names none (empty: the gateway's -default-policy)")
	fs.Float64Var(&s.ratio, "keep-ratio", 1, "default keep ratio (fraction of the prompt's KV cache kept)")
	fs.Float64Var(&s.minRatio, "min-keep-ratio", 0.05, "smallest keep ratio a request may ask for")
	fs.Float64Var(&s.maxRatio, "max-keep-ratio", 1, "largest keep ratio a request may ask for")
	fs.IntVar(&s.rpm, "rpm", 600, "requests per minute (0: unlimited)")
	fs.IntVar(&s.tpm, "tpm", 1000000, "prompt+completion tokens per minute (0: unlimited)")
	fs.IntVar(&s.concurrent, "max-concurrent", 16, "concurrent requests (0: unlimited)")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// apply copies the flags into t; on update only the flags given count.
func (s *settingFlags) apply(fs *flag.FlagSet, t *Tenant, all bool) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	on := func(n string) bool { return all || set[n] }
	if on("models") {
		t.Models = splitList(s.models)
	}
	if on("policies") {
		t.Policies = splitList(s.policies)
	}
	if on("default-policy") {
		t.DefaultPolicy = s.defaultPolicy
	}
	if on("keep-ratio") {
		t.KeepRatio.Default = s.ratio
	}
	if on("min-keep-ratio") {
		t.KeepRatio.Min = s.minRatio
	}
	if on("max-keep-ratio") {
		t.KeepRatio.Max = s.maxRatio
	}
	if on("rpm") {
		t.RequestsPerMinute = s.rpm
	}
	if on("tpm") {
		t.TokensPerMinute = s.tpm
	}
	if on("max-concurrent") {
		t.MaxConcurrent = s.concurrent
	}
}

// RunCLI runs "vlcache-gateway tenants ARGS...". New keys go alone on a line
// to stdout (so scripts can capture them); everything else for people goes to
// stderr, except list/show/usage output.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, cliUsage)
		if len(args) == 0 {
			return errors.New("missing tenants command")
		}
		return nil
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("tenants "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := storeFlags(fs)
	var err error
	switch cmd {
	case "create", "update":
		var s settingFlags
		s.register(fs)
		name, perr := parse(fs, rest, true)
		if perr != nil {
			return perr
		}
		return withStore(cfg, func(cs *cliStore) error {
			if cmd == "update" {
				t, err := cs.store.Get(ctx, name)
				if err != nil {
					return fmt.Errorf("tenant %s: %w", name, err)
				}
				s.apply(fs, t, false)
				if err := cs.store.Update(ctx, t); err != nil {
					return err
				}
				fmt.Fprintf(stderr, "tenant %s updated\n", name)
				return nil
			}
			if s.models == "" {
				return errors.New(`create needs --models (comma-separated, or "*")`)
			}
			key, err := NewKey()
			if err != nil {
				return err
			}
			t := &Tenant{Name: name, KeyHashes: []string{HashKey(key)}, CreatedAt: time.Now().UTC()}
			s.apply(fs, t, true)
			if err := cs.store.Create(ctx, t); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "tenant %s created; its API key follows and is shown only once:\n", name)
			fmt.Fprintln(stdout, key)
			return nil
		})
	case "list":
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err = parse(fs, rest, false); err != nil {
			return err
		}
		return withStore(cfg, func(cs *cliStore) error {
			ts, err := cs.store.List(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(stdout, ts)
			}
			w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tMODELS\tPOLICY\tKEEP RATIO (min/default/max)\tRPM\tTPM\tCONCURRENT\tKEYS")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%g/%g/%g\t%d\t%d\t%d\t%d\n", t.Name, strings.Join(t.Models, ","), orDash(t.DefaultPolicy),
					t.KeepRatio.Min, t.KeepRatio.Default, t.KeepRatio.Max, t.RequestsPerMinute, t.TokensPerMinute, t.MaxConcurrent, len(t.KeyHashes))
			}
			return w.Flush()
		})
	case "show":
		name, perr := parse(fs, rest, true)
		if perr != nil {
			return perr
		}
		return withStore(cfg, func(cs *cliStore) error {
			t, err := cs.store.Get(ctx, name)
			if err != nil {
				return fmt.Errorf("tenant %s: %w", name, err)
			}
			return printJSON(stdout, t)
		})
	case "usage":
		days := fs.Int("days", 7, "the last N days, today included")
		from := fs.String("from", "", "first day (YYYY-MM-DD, UTC); overrides --days")
		to := fs.String("to", "", "last day (YYYY-MM-DD, UTC; default today)")
		asJSON := fs.Bool("json", false, "print JSON")
		name, perr := parse(fs, rest, true)
		if perr != nil {
			return perr
		}
		end := time.Now().UTC()
		if *to != "" {
			if end, err = time.Parse(time.DateOnly, *to); err != nil {
				return fmt.Errorf("--to: %w", err)
			}
		}
		start := end.AddDate(0, 0, -max(*days, 1)+1)
		if *from != "" {
			if start, err = time.Parse(time.DateOnly, *from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
		}
		return withStore(cfg, func(cs *cliStore) error {
			if cs.usage == nil {
				return errors.New("usage is kept in Redis; in tenants-file mode it lives in the gateway process only (see its /metrics)")
			}
			if _, err := cs.store.Get(ctx, name); err != nil {
				return fmt.Errorf("tenant %s: %w", name, err)
			}
			ds, err := cs.usage.Read(ctx, name, start, end)
			if err != nil {
				return err
			}
			if *asJSON {
				if ds == nil {
					ds = []usage.Day{}
				}
				return printJSON(stdout, ds)
			}
			w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DATE\tREQUESTS\tERRORS\tREJECTED\tPROMPT\tIMAGE\tCOMPLETION\tKV TOKENS KEPT\tKV TOKENS SAVED\tKV BYTES KEPT\tKV BYTES SAVED")
			var total usage.Record
			for _, d := range ds {
				printDay(w, d.Date, d.Record)
				total.Add(d.Record)
			}
			printDay(w, "total", total)
			return w.Flush()
		})
	case "rotate-key":
		keepOld := fs.Bool("keep-old", false, "keep the existing keys valid too (for a handover)")
		name, perr := parse(fs, rest, true)
		if perr != nil {
			return perr
		}
		return withStore(cfg, func(cs *cliStore) error {
			t, err := cs.store.Get(ctx, name)
			if err != nil {
				return fmt.Errorf("tenant %s: %w", name, err)
			}
			key, err := NewKey()
			if err != nil {
				return err
			}
			if !*keepOld {
				t.KeyHashes = nil
			}
			t.KeyHashes = append(t.KeyHashes, HashKey(key))
			if err := cs.store.Update(ctx, t); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "new API key for %s follows and is shown only once (%d key(s) now valid):\n", name, len(t.KeyHashes))
			fmt.Fprintln(stdout, key)
			return nil
		})
	case "delete":
		purge := fs.Bool("purge-usage", false, "also delete the tenant's usage history")
		name, perr := parse(fs, rest, true)
		if perr != nil {
			return perr
		}
		return withStore(cfg, func(cs *cliStore) error {
			if err := cs.store.Delete(ctx, name); err != nil {
				return err
			}
			if *purge && cs.usage != nil {
				if err := cs.usage.Delete(ctx, name); err != nil {
					return err
				}
			}
			fmt.Fprintf(stderr, "tenant %s deleted\n", name)
			return nil
		})
	}
	fmt.Fprint(stderr, cliUsage)
	return fmt.Errorf("unknown tenants command %q", cmd)
}

func withStore(cfg *Config, fn func(*cliStore) error) error {
	cs, err := openCLIStore(cfg)
	if err != nil {
		return err
	}
	defer cs.close()
	return fn(cs)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printDay(w io.Writer, date string, r usage.Record) {
	fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", date, r.Requests, r.Errors, r.Rejected, r.PromptTokens,
		r.ImageTokens, r.CompletionTokens, r.KVTokensKept, r.KVTokensSaved, r.KVBytesKept, r.KVBytesSaved)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
