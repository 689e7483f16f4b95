package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// TypeAll is the row of every question type together.
const TypeAll = "all"

// Cell is one (protocol, policy, keep ratio, question type) aggregate.
type Cell struct {
	Protocol    string  `json:"protocol"`
	Policy      string  `json:"policy"`
	KeepRatio   float64 `json:"keep_ratio"`
	Type        string  `json:"type"`
	N           int     `json:"n"`
	ScoreSum    float64 `json:"score_sum"`
	Accuracy    float64 `json:"accuracy"`
	Errors      int     `json:"errors"`
	KVBytesKept float64 `json:"kv_bytes_kept_mean"`
	KVBytesFull float64 `json:"kv_bytes_full_mean"`
}

// RefDiff compares one configuration's predictions with reference predictions.
type RefDiff struct {
	Protocol  string   `json:"protocol"`
	Policy    string   `json:"policy"`
	KeepRatio float64  `json:"keep_ratio"`
	Compared  int      `json:"compared"`
	Differ    int      `json:"differ"`
	DifferIDs []string `json:"differ_ids,omitempty"`
}

// Summary is the aggregated results.
type Summary struct {
	Settings  []Setting `json:"settings"`
	Cells     []Cell    `json:"cells"`
	Reference []RefDiff `json:"reference,omitempty"`
	Types     []string  `json:"types"`
	ElapsedS  float64   `json:"elapsed_s"`
}

// Setting is one printed choice that changes the numbers.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

func cellKey(protocol, policy string, ratio float64, typ string) string {
	return fmt.Sprintf("%s|%s|%g|%s", protocol, policy, ratio, typ)
}

// Summarize aggregates the predictions in the configuration's order.
func Summarize(res *Results, settings []Setting, reference map[string]string) *Summary {
	cfg := res.Config
	sum := &Summary{Settings: settings, ElapsedS: res.Elapsed.Seconds()}
	typeSet := map[string]bool{}
	for _, p := range res.Predictions {
		if p.Type != "" {
			typeSet[p.Type] = true
		}
	}
	for t := range typeSet {
		sum.Types = append(sum.Types, t)
	}
	sort.Strings(sum.Types)
	cells := map[string]*Cell{}
	for _, p := range res.Predictions {
		for _, typ := range []string{TypeAll, p.Type} {
			if typ == "" {
				continue
			}
			k := cellKey(p.Protocol, p.Policy, p.KeepRatio, typ)
			c := cells[k]
			if c == nil {
				c = &Cell{Protocol: p.Protocol, Policy: p.Policy, KeepRatio: p.KeepRatio, Type: typ}
				cells[k] = c
			}
			c.N++
			c.ScoreSum += p.Score
			if p.Error != "" {
				c.Errors++
			}
			c.KVBytesKept += float64(p.KVBytesKept)
			c.KVBytesFull += float64(p.KVBytesFull)
		}
	}
	for _, proto := range cfg.Protocols {
		for _, pol := range cfg.Policies {
			for _, r := range cfg.KeepRatios {
				for _, typ := range append([]string{TypeAll}, sum.Types...) {
					c := cells[cellKey(proto, pol, r, typ)]
					if c == nil {
						continue
					}
					c.Accuracy = c.ScoreSum / float64(c.N)
					c.KVBytesKept /= float64(c.N)
					c.KVBytesFull /= float64(c.N)
					sum.Cells = append(sum.Cells, *c)
				}
			}
		}
	}
	if reference != nil {
		sum.Reference = compareReference(res, reference)
	}
	return sum
}

// compareReference counts, for each first-question configuration at keep
// ratio 1.0, the predictions that differ from the reference.
func compareReference(res *Results, reference map[string]string) []RefDiff {
	diffs := map[string]*RefDiff{}
	var order []string
	for _, p := range res.Predictions {
		if p.Protocol == ProtocolFollowUp || p.KeepRatio != 1 {
			continue
		}
		ref, ok := reference[p.Sample]
		if !ok {
			continue
		}
		k := p.Protocol + "|" + p.Policy
		d := diffs[k]
		if d == nil {
			d = &RefDiff{Protocol: p.Protocol, Policy: p.Policy, KeepRatio: 1}
			diffs[k] = d
			order = append(order, k)
		}
		d.Compared++
		if strings.TrimSpace(ref) != p.Prediction || p.Error != "" {
			d.Differ++
			d.DifferIDs = append(d.DifferIDs, p.Sample)
		}
	}
	sort.Strings(order)
	out := make([]RefDiff, 0, len(order))
	for _, k := range order {
		sort.Strings(diffs[k].DifferIDs)
		out = append(out, *diffs[k])
	}
	return out
}

// Lookup finds a cell.
func (s *Summary) Lookup(protocol, policy string, ratio float64, typ string) (Cell, bool) {
	for _, c := range s.Cells {
		if c.Protocol == protocol && c.Policy == policy && c.KeepRatio == ratio && c.Type == typ {
			return c, true
		}
	}
	return Cell{}, false
}

func formatRatio(r float64) string { return strconv.FormatFloat(r, 'g', -1, 64) }

// WriteTable writes the Markdown tables: for each protocol, policy x keep
// ratio accuracy over all questions, then per question type; n in the heading
// when it is the same in every cell, otherwise in each cell.
func WriteTable(w io.Writer, cfg Config, sum *Summary) {
	fmt.Fprintln(w, "## Settings")
	fmt.Fprintln(w)
	for _, s := range sum.Settings {
		fmt.Fprintf(w, "- %s: %s\n", s.Name, s.Value)
	}
	for _, proto := range cfg.Protocols {
		for _, typ := range append([]string{TypeAll}, sum.Types...) {
			ns := map[int]bool{}
			errs := 0
			for _, c := range sum.Cells {
				if c.Protocol == proto && c.Type == typ {
					ns[c.N] = true
					errs += c.Errors
				}
			}
			if len(ns) == 0 {
				continue
			}
			sameN := -1
			if len(ns) == 1 {
				for n := range ns {
					sameN = n
				}
			}
			title := fmt.Sprintf("%s, %s", proto, typ)
			if sameN >= 0 {
				title += fmt.Sprintf(" (n = %d per cell)", sameN)
			}
			if errs > 0 {
				title += fmt.Sprintf(", %d failed requests scored 0 (marked !)", errs)
			}
			fmt.Fprintf(w, "\n### %s\n\n| policy |", title)
			for _, r := range cfg.KeepRatios {
				fmt.Fprintf(w, " %s |", formatRatio(r))
			}
			fmt.Fprint(w, "\n| --- |")
			for range cfg.KeepRatios {
				fmt.Fprint(w, " ---: |")
			}
			fmt.Fprintln(w)
			for _, pol := range cfg.Policies {
				fmt.Fprintf(w, "| %s |", pol)
				for _, r := range cfg.KeepRatios {
					c, ok := sum.Lookup(proto, pol, r, typ)
					if !ok {
						fmt.Fprint(w, " - |")
						continue
					}
					cell := fmt.Sprintf("%.3f", c.Accuracy)
					if sameN < 0 {
						cell += fmt.Sprintf(" (n=%d)", c.N)
					}
					if c.Errors > 0 {
						cell += fmt.Sprintf(" !%d", c.Errors)
					}
					fmt.Fprintf(w, " %s |", cell)
				}
				fmt.Fprintln(w)
			}
		}
		writeKVRow(w, cfg, sum, proto)
	}
	if len(sum.Reference) > 0 {
		fmt.Fprintln(w, "\n### Predictions at keep ratio 1 that differ from the reference predictions")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| protocol | policy | compared | differ |")
		fmt.Fprintln(w, "| --- | --- | ---: | ---: |")
		for _, d := range sum.Reference {
			fmt.Fprintf(w, "| %s | %s | %d | %d |\n", d.Protocol, d.Policy, d.Compared, d.Differ)
		}
	}
}

// writeKVRow shows the mean KV bytes kept per ratio (from the backend's stats).
func writeKVRow(w io.Writer, cfg Config, sum *Summary, proto string) {
	any := false
	for _, c := range sum.Cells {
		if c.Protocol == proto && c.KVBytesFull > 0 {
			any = true
		}
	}
	if !any {
		return
	}
	fmt.Fprintf(w, "\n### %s, mean KV cache kept (KiB of prompt K+V; full in the last column)\n\n| policy |", proto)
	for _, r := range cfg.KeepRatios {
		fmt.Fprintf(w, " %s |", formatRatio(r))
	}
	fmt.Fprint(w, " full |\n| --- |")
	for range cfg.KeepRatios {
		fmt.Fprint(w, " ---: |")
	}
	fmt.Fprintln(w, " ---: |")
	for _, pol := range cfg.Policies {
		fmt.Fprintf(w, "| %s |", pol)
		full := 0.0
		for _, r := range cfg.KeepRatios {
			c, ok := sum.Lookup(proto, pol, r, TypeAll)
			if !ok {
				fmt.Fprint(w, " - |")
				continue
			}
			full = math.Max(full, c.KVBytesFull)
			fmt.Fprintf(w, " %.1f |", c.KVBytesKept/1024)
		}
		fmt.Fprintf(w, " %.1f |\n", full/1024)
	}
}

// WriteOutputs writes table.md, summary.json and predictions.jsonl to dir.
func WriteOutputs(dir string, res *Results, sum *Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var tb strings.Builder
	WriteTable(&tb, res.Config, sum)
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(tb.String()), 0o644); err != nil {
		return err
	}
	type summaryFile struct {
		*Summary
		Samples   int         `json:"samples"`
		FollowUps int         `json:"follow_ups"`
		Plot      *PlotSample `json:"plot_sample,omitempty"`
	}
	b, err := json.MarshalIndent(summaryFile{Summary: sum, Samples: res.Samples, FollowUps: res.FollowUps}, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), b, 0o644); err != nil {
		return err
	}
	if res.Plot != nil {
		pb, err := json.Marshal(res.Plot)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "plot_sample.json"), pb, 0o644); err != nil {
			return err
		}
	}
	f, err := os.Create(filepath.Join(dir, "predictions.jsonl"))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, p := range res.Predictions {
		if err := enc.Encode(p); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// sortPredictions puts predictions in sample, protocol, policy, ratio order
// so that output files compare across runs.
func sortPredictions(preds []*Prediction, samples []*Sample, cfg *Config) {
	rank := func(list []string, v string) int {
		for i, x := range list {
			if x == v {
				return i
			}
		}
		return len(list)
	}
	sampleRank := make(map[string]int, len(samples))
	for i, s := range samples {
		sampleRank[s.ID] = i
	}
	ratioRank := func(r float64) int {
		for i, x := range cfg.KeepRatios {
			if x == r {
				return i
			}
		}
		return len(cfg.KeepRatios)
	}
	sort.SliceStable(preds, func(i, j int) bool {
		a, b := preds[i], preds[j]
		if sa, sb := sampleRank[a.Sample], sampleRank[b.Sample]; sa != sb {
			return sa < sb
		}
		if pa, pb := rank(cfg.Protocols, a.Protocol), rank(cfg.Protocols, b.Protocol); pa != pb {
			return pa < pb
		}
		if pa, pb := rank(cfg.Policies, a.Policy), rank(cfg.Policies, b.Policy); pa != pb {
			return pa < pb
		}
		return ratioRank(a.KeepRatio) < ratioRank(b.KeepRatio)
	})
}
