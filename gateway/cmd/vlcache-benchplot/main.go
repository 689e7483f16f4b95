// Command vlcache-benchplot turns the JSON of vlcache-bench (--out) into a
// Markdown table and plots: decode time per step against the prompt length for
// the full cache and each keep ratio, the KV cache a sequence holds, and how
// many sequences a fixed pool admits. docs/engine.md has the commands.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vlcache/vlcache/gateway/internal/benchreport"
)

func main() {
	if err := Main(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vlcache-benchplot:", err)
		os.Exit(1)
	}
}

// Main runs the command; it is what the tests call.
func Main(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vlcache-benchplot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "vlcache-bench JSON (its --out file)")
	out := fs.String("out", "bench-results", "output directory: table.md, bench.png, bench.svg")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || fs.NArg() > 0 {
		return fmt.Errorf("usage: vlcache-benchplot -in BENCH.json [-out DIR]")
	}
	report, err := benchreport.Load(*in)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	table := report.Table()
	if err := os.WriteFile(filepath.Join(*out, "table.md"), []byte(table), 0o644); err != nil {
		return err
	}
	files, err := report.Plot(filepath.Join(*out, "bench"))
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, table)
	fmt.Fprintf(stderr, "[benchplot] wrote %s and %v\n", filepath.Join(*out, "table.md"), files)
	return nil
}
