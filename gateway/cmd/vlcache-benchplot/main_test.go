package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMainWritesTableAndPlots(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := Main([]string{"-in", "../../internal/benchreport/testdata/bench.json", "-out", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| 512 | 1 | vlcache 0.1 |") {
		t.Errorf("table on stdout lacks the vlcache row:\n%s", out.String())
	}
	for _, name := range []string{"table.md", "bench.png", "bench.svg"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.Size() == 0 {
			t.Errorf("%s not written: %v", name, err)
		}
	}
}

func TestMainRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"runs": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"no input":   {},
		"missing":    {"-in", filepath.Join(dir, "none.json")},
		"no runs":    {"-in", bad},
		"extra args": {"-in", bad, "x"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Main(args, io.Discard, io.Discard); err == nil {
				t.Fatalf("Main(%v) succeeded", args)
			}
		})
	}
}
