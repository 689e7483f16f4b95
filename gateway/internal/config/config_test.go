package config

import (
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func parse(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c Config
	c.RegisterFlags(fs)
	err := c.Parse(fs, args, func(k string) string { return env[k] })
	return &c, err
}

var model = filepath.Join("..", "..", "..", "testdata", "tiny-llava-random")

func TestDefaultsEnvAndFlags(t *testing.T) {
	c, err := parse(t, []string{"-model", "tiny=" + model + ":tiny-llava", "-default-keep-ratio", "0.5"},
		map[string]string{"VLCACHE_LISTEN": "127.0.0.1:9999", "VLCACHE_DEFAULT_KEEP_RATIO": "0.2", "VLCACHE_IMAGE_ALLOWED_HOSTS": "a.example,b.example"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9999" || c.DefaultKeepRatio != 0.5 || c.TritonAddr != "127.0.0.1:8001" ||
		len(c.ImageAllowedHosts) != 2 || len(c.Policies) != len(KnownPolicies) {
		t.Fatalf("config %+v", c)
	}
	if m := c.Models[0]; m.Name != "tiny" || m.Dir != model || m.TritonModel != "tiny-llava" {
		t.Fatalf("model %+v", m)
	}
}

func TestValidateJoinsErrors(t *testing.T) {
	c, err := parse(t, []string{"-default-keep-ratio", "1.5", "-default-policy", "nope", "-max-images", "0",
		"-log-format", "xml", "-model", "a=/nonexistent"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"-default-keep-ratio", "-default-policy", "-max-images", "-log-format", "tokenizer.json"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from %v", want, err)
		}
	}
}

func TestBadEnvAndModelSpec(t *testing.T) {
	if _, err := parse(t, nil, map[string]string{"VLCACHE_MAX_IMAGES": "many"}); err == nil || !strings.Contains(err.Error(), "VLCACHE_MAX_IMAGES") {
		t.Fatalf("err = %v", err)
	}
	if _, err := parse(t, []string{"-model", "nodir"}, nil); err == nil {
		t.Fatal("a model without a directory must fail")
	}
	c, err := parse(t, nil, map[string]string{"VLCACHE_MODEL": "a=" + model + ",b=" + model + ":bb"})
	if err != nil || len(c.Models) != 2 || c.Models[1].TritonModel != "bb" || c.Models[0].TritonModel != "a" {
		t.Fatalf("models %+v err %v", c.Models, err)
	}
}
