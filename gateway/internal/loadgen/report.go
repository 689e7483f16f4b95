package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"

	vplot "github.com/vlcache/vlcache/gateway/internal/plot"
)

// Percentiles of one latency.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

// Percentile is the nearest-rank percentile of values (NaN when empty).
func Percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

func percentiles(v []float64) Percentiles {
	return Percentiles{P50: Percentile(v, 50), P95: Percentile(v, 95), P99: Percentile(v, 99), N: len(v)}
}

// Row aggregates one (target, keep ratio); KeepRatio 0 is every ratio.
type Row struct {
	Target        string      `json:"target"`
	KeepRatio     float64     `json:"keep_ratio"`
	Requests      int         `json:"requests"`
	Errors        int         `json:"errors"`
	MeanTokens    float64     `json:"mean_completion_tokens"`
	TTFTMs        Percentiles `json:"ttft_ms"`
	ITLMs         Percentiles `json:"itl_ms"`
	E2EMs         Percentiles `json:"e2e_ms"`
	E2E100Ms      Percentiles `json:"e2e_100_tokens_ms"` // TTFT + 99 x the request's mean ITL
	TokensPerS    float64     `json:"tokens_per_s,omitempty"`
	RequestsPerS  float64     `json:"requests_per_s,omitempty"`
	KVBytesKept   float64     `json:"kv_bytes_kept_mean"`
	KVBytesFull   float64     `json:"kv_bytes_full_mean"`
	FirstErrorMsg string      `json:"first_error,omitempty"`
}

// Report is the whole run's summary.
type Report struct {
	Settings map[string]string `json:"settings"`
	Rows     []Row             `json:"rows"`
	Phases   []*Phase          `json:"phases"`
}

// E2ETokens is the output length the normalised end-to-end latency is quoted for.
const E2ETokens = 100

func aggregate(target string, ratio float64, reqs []*Sample, wallS float64) Row {
	r := Row{Target: target, KeepRatio: ratio}
	var ttft, itl, e2e, e2e100 []float64
	tokens, kvKept, kvFull, kvN := 0, 0.0, 0.0, 0
	for _, s := range reqs {
		r.Requests++
		if s.Error != "" {
			r.Errors++
			if r.FirstErrorMsg == "" {
				r.FirstErrorMsg = s.Error
			}
			continue
		}
		tokens += s.CompletionTokens
		if s.CompletionTokens > 0 {
			ttft = append(ttft, s.TTFTMs)
		}
		e2e = append(e2e, s.E2EMs)
		itl = append(itl, s.ITLMs...)
		if len(s.ITLMs) > 0 {
			mean := 0.0
			for _, g := range s.ITLMs {
				mean += g
			}
			mean /= float64(len(s.ITLMs))
			e2e100 = append(e2e100, s.TTFTMs+float64(E2ETokens-1)*mean)
		}
		if s.KVBytesFull > 0 {
			kvKept += float64(s.KVBytesKept)
			kvFull += float64(s.KVBytesFull)
			kvN++
		}
	}
	ok := r.Requests - r.Errors
	if ok > 0 {
		r.MeanTokens = float64(tokens) / float64(ok)
	}
	if kvN > 0 {
		r.KVBytesKept, r.KVBytesFull = kvKept/float64(kvN), kvFull/float64(kvN)
	}
	r.TTFTMs, r.ITLMs, r.E2EMs, r.E2E100Ms = percentiles(ttft), percentiles(itl), percentiles(e2e), percentiles(e2e100)
	if wallS > 0 {
		r.TokensPerS = float64(tokens) / wallS
		r.RequestsPerS = float64(ok) / wallS
	}
	return r
}

// Summarize aggregates each phase per keep ratio and overall.
func Summarize(cfg Config, phases []*Phase, settings map[string]string) *Report {
	rep := &Report{Settings: settings, Phases: phases}
	for _, ph := range phases {
		rep.Rows = append(rep.Rows, aggregate(ph.Target, 0, ph.Requests, ph.WallS))
		for _, ratio := range uniqueRatios(cfg.KeepRatios) {
			var reqs []*Sample
			for _, s := range ph.Requests {
				if s.KeepRatio == ratio {
					reqs = append(reqs, s)
				}
			}
			rep.Rows = append(rep.Rows, aggregate(ph.Target, ratio, reqs, 0))
		}
	}
	return rep
}

func uniqueRatios(r []float64) []float64 {
	seen := map[float64]bool{}
	var out []float64
	for _, x := range r {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(out)))
	return out
}

func ratioName(r float64) string {
	if r == 0 {
		return "all"
	}
	return strconv.FormatFloat(r, 'g', -1, 64)
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// WriteTable prints the Markdown tables.
func WriteTable(w io.Writer, rep *Report) {
	fmt.Fprintln(w, "## Load run settings")
	fmt.Fprintln(w)
	keys := make([]string, 0, len(rep.Settings))
	for k := range rep.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "- %s: %s\n", k, rep.Settings[k])
	}
	fmt.Fprintln(w, "\n### Latency (ms), throughput and KV cache held per keep ratio")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | keep | req | err | tok/req | TTFT p50 | p95 | p99 | ITL p50 | p95 | p99 | E2E p50 | p95 | p99 | E2E@100 p50 | p95 | p99 | tok/s | req/s | KV KiB kept | KV KiB full |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rep.Rows {
		tps, rps := "", ""
		if r.KeepRatio == 0 {
			tps, rps = f1(r.TokensPerS), fmt.Sprintf("%.2f", r.RequestsPerS)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.1f |\n",
			r.Target, ratioName(r.KeepRatio), r.Requests, r.Errors, r.MeanTokens,
			f1(r.TTFTMs.P50), f1(r.TTFTMs.P95), f1(r.TTFTMs.P99), f1(r.ITLMs.P50), f1(r.ITLMs.P95), f1(r.ITLMs.P99),
			f1(r.E2EMs.P50), f1(r.E2EMs.P95), f1(r.E2EMs.P99), f1(r.E2E100Ms.P50), f1(r.E2E100Ms.P95), f1(r.E2E100Ms.P99),
			tps, rps, r.KVBytesKept/1024, r.KVBytesFull/1024)
	}
	gw, tr := rowsBy(rep, TargetGateway), rowsBy(rep, TargetTriton)
	if len(gw) > 0 && len(tr) > 0 {
		fmt.Fprintln(w, "\n### Gateway overhead (gateway minus direct gRPC to Triton, ms)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| keep | TTFT p50 | TTFT p95 | ITL p50 | E2E p50 | E2E p95 |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
		for _, g := range rep.Rows {
			if g.Target != TargetGateway {
				continue
			}
			t, ok := tr[g.KeepRatio]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", ratioName(g.KeepRatio),
				f1(g.TTFTMs.P50-t.TTFTMs.P50), f1(g.TTFTMs.P95-t.TTFTMs.P95), f1(g.ITLMs.P50-t.ITLMs.P50),
				f1(g.E2EMs.P50-t.E2EMs.P50), f1(g.E2EMs.P95-t.E2EMs.P95))
		}
	}
	for _, r := range rep.Rows {
		if r.FirstErrorMsg != "" && r.KeepRatio == 0 {
			fmt.Fprintf(w, "\n%s: %d errors, first: %s\n", r.Target, r.Errors, r.FirstErrorMsg)
		}
	}
}

func rowsBy(rep *Report, target string) map[float64]Row {
	out := map[float64]Row{}
	for _, r := range rep.Rows {
		if r.Target == target {
			out[r.KeepRatio] = r
		}
	}
	return out
}

// WriteOutputs writes table.md, loadgen.json and the plots to dir.
func WriteOutputs(dir string, cfg Config, rep *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, "table.md"))
	if err != nil {
		return nil, err
	}
	WriteTable(f, rep)
	if err := f.Close(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "loadgen.json"), b, 0o644); err != nil {
		return nil, err
	}
	ratios := uniqueRatios(cfg.KeepRatios)
	panel := func(title, ylabel string, value func(Row) float64) (*plot.Plot, error) {
		l := vplot.Lines{Title: title, XLabel: "keep ratio (log)", YLabel: ylabel, LogX: true, XTicks: ratios, YFromZero: true}
		for _, ph := range rep.Phases {
			rows := rowsBy(rep, ph.Target)
			s := vplot.Series{Name: ph.Target}
			for _, r := range ratios {
				s.X = append(s.X, r)
				row, ok := rows[r]
				if !ok || row.Requests == row.Errors {
					s.Y = append(s.Y, math.NaN())
					continue
				}
				s.Y = append(s.Y, value(row))
			}
			l.Series = append(l.Series, s)
		}
		return vplot.NewLines(l)
	}
	var panels []*plot.Plot
	for _, p := range []struct {
		title, y string
		v        func(Row) float64
	}{
		{"time to first token, p50", "ms", func(r Row) float64 { return r.TTFTMs.P50 }},
		{"inter-token latency, p50", "ms", func(r Row) float64 { return r.ITLMs.P50 }},
		{fmt.Sprintf("end-to-end for %d tokens (TTFT + 99 ITL), p50", E2ETokens), "ms", func(r Row) float64 { return r.E2E100Ms.P50 }},
		{"KV cache held per request (prompt K+V)", "KiB", func(r Row) float64 { return r.KVBytesKept / 1024 }},
	} {
		pl, err := panel(p.title, p.y, p.v)
		if err != nil {
			return nil, err
		}
		panels = append(panels, pl)
	}
	return vplot.Save([][]*plot.Plot{panels[:2], panels[2:]}, 24*vg.Centimeter, 20*vg.Centimeter, filepath.Join(dir, "latency"))
}
