// Package config holds the gateway's settings: flags, each with an
// environment variable VLCACHE_<FLAG_NAME> as its default, validated with all
// problems reported at once. It knows nothing of how the gateway is deployed.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ModelSpec is one served model: -model NAME=DIR[:TRITON_MODEL].
type ModelSpec struct {
	Name        string // the OpenAI model id
	Dir         string // Hugging Face layout directory (tokenizer, chat template, configs)
	TritonModel string // name in the Triton repository (default: Name)
}

type modelList []ModelSpec

func (m *modelList) String() string {
	parts := make([]string, len(*m))
	for i, s := range *m {
		parts[i] = s.Name + "=" + s.Dir + ":" + s.TritonModel
	}
	return strings.Join(parts, ",")
}

// Set accepts one spec or a comma-separated list (for the environment).
func (m *modelList) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, rest, ok := strings.Cut(item, "=")
		if !ok || name == "" || rest == "" {
			return fmt.Errorf("model %q: want NAME=DIR[:TRITON_MODEL]", item)
		}
		spec := ModelSpec{Name: name, Dir: rest, TritonModel: name}
		if i := strings.LastIndex(rest, ":"); i > 0 {
			spec.Dir, spec.TritonModel = rest[:i], rest[i+1:]
		}
		*m = append(*m, spec)
	}
	return nil
}

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*s = append(*s, x)
		}
	}
	return nil
}

// Config is every gateway setting.
type Config struct {
	Listen           string
	TritonAddr       string
	TritonMaxBackoff time.Duration
	TritonMaxMessage int
	Models           modelList

	DefaultKeepRatio float64
	DefaultPolicy    string
	Policies         stringList

	DefaultMaxTokens int
	MaxImages        int
	MaxBodyBytes     int64

	ImageMaxBytes     int64
	ImageMaxPixels    int64
	ImageFetchTimeout time.Duration
	ImageAllowedHosts stringList
	ImageAllowPrivate bool

	RequestTimeout    time.Duration
	ReadHeaderTimeout time.Duration
	ShutdownTimeout   time.Duration
	ReadyTimeout      time.Duration
	StartupTimeout    time.Duration

	LogFormat string
	LogLevel  string
}

// KnownPolicies are the backend's policy names (docs/contract.md).
var KnownPolicies = []string{"full", "vlcache", "h2o", "snapkv", "streamingllm", "pyramidkv", "vlcache-scores", "vlcache-budget"}

// RegisterFlags adds the flags with their documented defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "HTTP listen address")
	fs.StringVar(&c.TritonAddr, "triton-grpc", "127.0.0.1:8001", "tritonserver gRPC address")
	fs.DurationVar(&c.TritonMaxBackoff, "triton-max-backoff", 5*time.Second, "longest wait between reconnection attempts to tritonserver")
	fs.IntVar(&c.TritonMaxMessage, "triton-max-message-bytes", 256<<20, "largest gRPC message to or from tritonserver (images travel inside)")
	fs.Var(&c.Models, "model", "served model NAME=DIR[:TRITON_MODEL] (repeatable; the env var takes a comma-separated list)")
	fs.Float64Var(&c.DefaultKeepRatio, "default-keep-ratio", 1.0, "fraction of the prompt's KV cache kept when a request asks for none, in (0, 1]")
	fs.StringVar(&c.DefaultPolicy, "default-policy", "vlcache", "KV-cache policy when a request asks for none")
	fs.Var(&c.Policies, "policies", "policy names a request may ask for (comma-separated; default: all the backend knows)")
	fs.IntVar(&c.DefaultMaxTokens, "default-max-tokens", 256, "completion tokens when a request gives no max_tokens")
	fs.IntVar(&c.MaxImages, "max-images", 16, "images per request")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 64<<20, "request body cap in bytes")
	fs.Int64Var(&c.ImageMaxBytes, "image-max-bytes", 20<<20, "encoded size cap per image in bytes")
	fs.Int64Var(&c.ImageMaxPixels, "image-max-pixels", 50_000_000, "width*height cap per image, checked before decoding")
	fs.DurationVar(&c.ImageFetchTimeout, "image-fetch-timeout", 10*time.Second, "timeout of one image download, redirects included")
	fs.Var(&c.ImageAllowedHosts, "image-allowed-hosts", "if set, the only hosts images may be fetched from (comma-separated)")
	fs.BoolVar(&c.ImageAllowPrivate, "image-allow-private", false, "allow image URLs on loopback/private addresses (tests and closed networks only)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 10*time.Minute, "limit on one request, streaming included (0: none)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send the request headers")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long open streams may finish after a stop signal")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 2*time.Second, "timeout of each readiness probe of tritonserver")
	fs.DurationVar(&c.StartupTimeout, "startup-timeout", 5*time.Second, "how long to try reading model metadata at start before serving anyway")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
}

// EnvName is the environment variable that sets a flag's default.
func EnvName(flagName string) string {
	return "VLCACHE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse applies the environment, then the command line (which wins).
func (c *Config) Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(c.Policies) == 0 {
		c.Policies = append(stringList(nil), KnownPolicies...)
	}
	return nil
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Listen == "" {
		bad("-listen is empty")
	}
	if c.TritonAddr == "" {
		bad("-triton-grpc is empty")
	}
	if len(c.Models) == 0 {
		bad("no -model given (NAME=DIR[:TRITON_MODEL])")
	}
	seen := map[string]bool{}
	for _, m := range c.Models {
		if seen[m.Name] {
			bad("model %q given twice", m.Name)
		}
		seen[m.Name] = true
		if st, err := os.Stat(filepath.Join(m.Dir, "tokenizer.json")); err != nil || st.IsDir() {
			bad("model %q: %s has no tokenizer.json", m.Name, m.Dir)
		}
	}
	if !(c.DefaultKeepRatio > 0 && c.DefaultKeepRatio <= 1) {
		bad("-default-keep-ratio %v is outside (0, 1]", c.DefaultKeepRatio)
	}
	if !contains(c.Policies, c.DefaultPolicy) {
		bad("-default-policy %q is not in -policies %v", c.DefaultPolicy, []string(c.Policies))
	}
	positive := map[string]int64{"-default-max-tokens": int64(c.DefaultMaxTokens), "-max-images": int64(c.MaxImages),
		"-max-body-bytes": c.MaxBodyBytes, "-triton-max-message-bytes": int64(c.TritonMaxMessage), "-image-max-bytes": c.ImageMaxBytes, "-image-max-pixels": c.ImageMaxPixels}
	for name, v := range positive {
		if v <= 0 {
			bad("%s must be positive, got %d", name, v)
		}
	}
	for name, d := range map[string]time.Duration{"-image-fetch-timeout": c.ImageFetchTimeout, "-shutdown-timeout": c.ShutdownTimeout,
		"-ready-timeout": c.ReadyTimeout, "-triton-max-backoff": c.TritonMaxBackoff, "-read-header-timeout": c.ReadHeaderTimeout} {
		if d <= 0 {
			bad("%s must be positive, got %v", name, d)
		}
	}
	if c.RequestTimeout < 0 || c.StartupTimeout < 0 {
		bad("-request-timeout and -startup-timeout must not be negative")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("-log-format %q is not json or text", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("-log-level %q is not debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
