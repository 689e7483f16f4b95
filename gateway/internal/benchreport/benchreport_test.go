package benchreport

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/bench.json is real output of
// vlcache-bench --model testdata/tiny-llava-trained --prompt-tokens 512 --batch 1
// --keep-ratios 0.1 --tokens 8 --threads 1 --fit-max 4.
func load(t *testing.T) *Report {
	t.Helper()
	r, err := Load("testdata/bench.json")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLoadReadsRunsAndFit(t *testing.T) {
	r := load(t)
	if len(r.Runs) != 2 || len(r.Fit) != 2 {
		t.Fatalf("runs %d fit %d, want 2 and 2", len(r.Runs), len(r.Fit))
	}
	full := r.find(512, 1, config{"full", 1})
	vl := r.find(512, 1, config{"vlcache", 0.1})
	if full == nil || vl == nil {
		t.Fatal("full or vlcache 0.1 run not found")
	}
	if got := full.DecodeMsPerStep / vl.DecodeMsPerStep; math.Abs(got-vl.DecodeSpeedup) > 1e-6 {
		t.Errorf("speed-up %v does not match the ratio of step times %v", vl.DecodeSpeedup, got)
	}
	if vl.KVBytesKept*5 > vl.KVBytesFull {
		t.Errorf("vlcache 0.1 keeps %d of %d bytes", vl.KVBytesKept, vl.KVBytesFull)
	}
}

func TestConfigsPutTheFullCacheFirst(t *testing.T) {
	r := &Report{Runs: []Run{
		{Policy: "vlcache", KeepRatio: 0.1}, {Policy: "vlcache", KeepRatio: 0.5},
		{Policy: "full", KeepRatio: 1}, {Policy: "h2o", KeepRatio: 0.1},
	}}
	var names []string
	for _, c := range r.configs() {
		names = append(names, c.String())
	}
	if got := strings.Join(names, ","); got != "full cache,h2o 0.1,vlcache 0.5,vlcache 0.1" {
		t.Errorf("configs %s", got)
	}
}

func TestTableHasEveryRunAndThePool(t *testing.T) {
	table := load(t).Table()
	for _, want := range []string{
		"| 512 | 1 | full cache | 85.4 | 1.34 | 0.917 | 1.00x | 2048 | 100.0% |",
		"| 512 | 1 | vlcache 0.1 | 79.4 | 0.28 | 0.500 | 1.84x | 205 | 10.0% |",
		"in a 16 MiB KV pool", "| vlcache 0.1 | 4+ | 1.0x |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestPlotWritesPNGAndSVG(t *testing.T) {
	base := filepath.Join(t.TempDir(), "bench")
	files, err := load(t).Plot(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("files %v", files)
	}
	for _, f := range files {
		if info, err := os.Stat(f); err != nil || info.Size() < 1000 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestLoadRefusesIncompleteRuns(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"not json":   "{",
		"no runs":    `{"runs": []}`,
		"no policy":  `{"runs": [{"prompt_tokens": 8, "batch": 1, "keep_ratio": 1, "decode_ms_per_step": 1}]}`,
		"zero batch": `{"runs": [{"prompt_tokens": 8, "policy": "full", "keep_ratio": 1, "decode_ms_per_step": 1}]}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}
