// Package benchreport reads the JSON that vlcache-bench writes (--out) and
// turns it into a Markdown table and plots: decode time per step against the
// prompt length for the full cache and each policy and keep ratio, the KV cache
// a sequence holds, and how many sequences a fixed KV pool admits.
package benchreport

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"

	"github.com/vlcache/vlcache/gateway/internal/plot"
)

// Report is vlcache-bench's output (backend/tools/README.md).
type Report struct {
	Model    string          `json:"model"`
	Settings json.RawMessage `json:"settings"`
	Runs     []Run           `json:"runs"`
	Fit      []Fit           `json:"fit"`
}

// Run is one configuration: prompt length x batch x policy x keep ratio.
type Run struct {
	PromptTokens     int     `json:"prompt_tokens"`
	ImageTokens      int     `json:"image_tokens"`
	Batch            int     `json:"batch"`
	Policy           string  `json:"policy"`
	KeepRatio        float64 `json:"keep_ratio"`
	CompletionTokens int     `json:"completion_tokens"`
	PrefillMs        float64 `json:"prefill_ms"`
	CompressMs       float64 `json:"compress_ms"`
	DecodeMsPerStep  float64 `json:"decode_ms_per_step"`
	E2EMs            float64 `json:"e2e_ms"`
	KVBytesFull      int64   `json:"kv_bytes_full"`
	KVBytesKept      int64   `json:"kv_bytes_kept"`
	DecodeSpeedup    float64 `json:"decode_speedup_vs_full"`
	E2ESpeedup       float64 `json:"e2e_speedup_vs_full"`
}

// Fit is how many sequences of one prompt length a fixed pool runs at once.
type Fit struct {
	PromptTokens int     `json:"prompt_tokens"`
	Policy       string  `json:"policy"`
	KeepRatio    float64 `json:"keep_ratio"`
	PoolBytes    int64   `json:"pool_bytes"`
	Reserved     int     `json:"reserved_decode_tokens"`
	Sequences    int     `json:"sequences"`
	AtLeast      bool    `json:"at_least"`
	VsFull       float64 `json:"vs_full"`
}

// Load reads and checks a vlcache-bench JSON file.
func Load(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s is not vlcache-bench JSON: %w", path, err)
	}
	if len(r.Runs) == 0 {
		return nil, fmt.Errorf("%s has no runs", path)
	}
	for i, run := range r.Runs {
		if run.PromptTokens <= 0 || run.Batch <= 0 || run.Policy == "" || run.KeepRatio <= 0 ||
			run.DecodeMsPerStep <= 0 {
			return nil, fmt.Errorf("%s: run %d is incomplete (prompt_tokens, batch, policy, keep_ratio, "+
				"decode_ms_per_step needed)", path, i)
		}
	}
	return &r, nil
}

// config names a policy at a keep ratio; the full cache is "full".
type config struct {
	policy string
	ratio  float64
}

func (c config) String() string {
	if c.policy == "full" {
		return "full cache"
	}
	return fmt.Sprintf("%s %g", c.policy, c.ratio)
}

func (r *Report) configs() []config {
	seen := map[config]bool{}
	var out []config
	for _, run := range r.Runs {
		c := config{run.Policy, run.KeepRatio}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	// Full first, then by policy and decreasing ratio.
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].policy == "full") != (out[j].policy == "full") {
			return out[i].policy == "full"
		}
		if out[i].policy != out[j].policy {
			return out[i].policy < out[j].policy
		}
		return out[i].ratio > out[j].ratio
	})
	return out
}

func ints(values map[int]bool) []int {
	out := make([]int, 0, len(values))
	for v := range values {
		out = append(out, v)
	}
	sort.Ints(out)
	return out
}

func (r *Report) prompts() []int {
	m := map[int]bool{}
	for _, run := range r.Runs {
		m[run.PromptTokens] = true
	}
	return ints(m)
}

func (r *Report) batches() []int {
	m := map[int]bool{}
	for _, run := range r.Runs {
		m[run.Batch] = true
	}
	return ints(m)
}

func (r *Report) find(prompt, batch int, c config) *Run {
	for i := range r.Runs {
		run := &r.Runs[i]
		if run.PromptTokens == prompt && run.Batch == batch && run.Policy == c.policy && run.KeepRatio == c.ratio {
			return run
		}
	}
	return nil
}

// Table is the report as Markdown: one row per run, then the pool capacity.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## vlcache-bench, %s\n\n", r.Model)
	b.WriteString("| prompt | batch | cache | prefill ms | compress ms | decode ms/step | decode speed-up | " +
		"KV KiB per sequence | KV kept |\n")
	b.WriteString("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, prompt := range r.prompts() {
		for _, batch := range r.batches() {
			for _, c := range r.configs() {
				run := r.find(prompt, batch, c)
				if run == nil {
					continue
				}
				kept := 1.0
				if run.KVBytesFull > 0 {
					kept = float64(run.KVBytesKept) / float64(run.KVBytesFull)
				}
				fmt.Fprintf(&b, "| %d | %d | %s | %.1f | %.2f | %.3f | %.2fx | %.0f | %.1f%% |\n",
					prompt, batch, c, run.PrefillMs, run.CompressMs, run.DecodeMsPerStep, run.DecodeSpeedup,
					float64(run.KVBytesKept)/1024, 100*kept)
			}
		}
	}
	if len(r.Fit) > 0 {
		f0 := r.Fit[0]
		fmt.Fprintf(&b, "\nSequences of %d prompt tokens (+%d reserved for decoding) running at once in a "+
			"%d MiB KV pool:\n\n", f0.PromptTokens, f0.Reserved, f0.PoolBytes>>20)
		b.WriteString("| cache | sequences | vs full |\n| --- | ---: | ---: |\n")
		for _, f := range r.Fit {
			more := ""
			if f.AtLeast {
				more = "+"
			}
			fmt.Fprintf(&b, "| %s | %d%s | %.1fx |\n", config{f.Policy, f.KeepRatio}, f.Sequences, more, f.VsFull)
		}
	}
	return b.String()
}

// Plot draws base.png and base.svg: decode time per step against the prompt
// length, one panel per batch size; below, the KV cache per sequence and the
// sequences a fixed pool admits.
func (r *Report) Plot(base string) ([]string, error) {
	prompts := r.prompts()
	xs := make([]float64, len(prompts))
	for i, p := range prompts {
		xs[i] = float64(p)
	}
	batches := r.batches()
	cols := int(math.Max(2, float64(len(batches))))
	// One line per configuration: value of its run at each prompt length.
	seriesOf := func(batch int, value func(*Run) float64) []plot.Series {
		var out []plot.Series
		for _, c := range r.configs() {
			ys := make([]float64, len(prompts))
			for i, p := range prompts {
				ys[i] = math.NaN()
				if run := r.find(p, batch, c); run != nil {
					ys[i] = value(run)
				}
			}
			out = append(out, plot.Series{Name: c.String(), X: xs, Y: ys})
		}
		return out
	}
	top := make([]*gplot.Plot, 0, cols)
	for _, batch := range batches {
		series := seriesOf(batch, func(run *Run) float64 { return run.DecodeMsPerStep })
		p, err := plot.NewLines(plot.Lines{
			Title:  fmt.Sprintf("decode step, batch %d", batch),
			XLabel: "prompt tokens", YLabel: "ms per step (lower is better)",
			Series: series, XTicks: xs, YFromZero: true, LegendAt: "top-left",
		})
		if err != nil {
			return nil, err
		}
		top = append(top, p)
	}
	for len(top) < cols {
		top = append(top, nil)
	}
	kvPlot, err := plot.NewLines(plot.Lines{
		Title:  "KV cache held per sequence",
		XLabel: "prompt tokens", YLabel: "MiB",
		Series: seriesOf(batches[0], func(run *Run) float64 { return float64(run.KVBytesKept) / (1 << 20) }),
		XTicks: xs, YFromZero: true, LegendAt: "top-left",
	})
	if err != nil {
		return nil, err
	}
	bottom := []*gplot.Plot{kvPlot}
	if len(r.Fit) > 0 {
		fitPlot, err := r.fitPlot()
		if err != nil {
			return nil, err
		}
		bottom = append(bottom, fitPlot)
	}
	for len(bottom) < cols {
		bottom = append(bottom, nil)
	}
	return plot.Save([][]*gplot.Plot{top, bottom}, vg.Length(cols)*12*vg.Centimeter, 22*vg.Centimeter, base)
}

// fitPlot draws the sequences a fixed pool admits against the keep ratio, one
// line per policy, with the full cache's count as a flat line.
func (r *Report) fitPlot() (*gplot.Plot, error) {
	byPolicy := map[string][]Fit{}
	var policies []string
	fullSeqs := math.NaN()
	for _, f := range r.Fit {
		if f.Policy == "full" {
			fullSeqs = float64(f.Sequences)
			continue
		}
		if _, ok := byPolicy[f.Policy]; !ok {
			policies = append(policies, f.Policy)
		}
		byPolicy[f.Policy] = append(byPolicy[f.Policy], f)
	}
	if len(policies) == 0 {
		return nil, errors.New("the fit results have no compressed configuration")
	}
	ratios := map[float64]bool{}
	series := []plot.Series{{Name: "full cache"}} // first: the same colour as in the other panels
	for _, policy := range policies {
		fits := byPolicy[policy]
		sort.Slice(fits, func(a, b int) bool { return fits[a].KeepRatio < fits[b].KeepRatio })
		s := plot.Series{Name: policy}
		for _, f := range fits {
			s.X = append(s.X, f.KeepRatio)
			s.Y = append(s.Y, float64(f.Sequences))
			ratios[f.KeepRatio] = true
		}
		series = append(series, s)
	}
	var ticks []float64
	for x := range ratios {
		ticks = append(ticks, x)
	}
	sort.Float64s(ticks)
	flat := make([]float64, len(ticks))
	for i := range flat {
		flat[i] = fullSeqs
	}
	series[0].X, series[0].Y = ticks, flat
	f0 := r.Fit[0]
	return plot.NewLines(plot.Lines{
		Title:  fmt.Sprintf("sequences of %d tokens in a %d MiB pool", f0.PromptTokens, f0.PoolBytes>>20),
		XLabel: "keep ratio", YLabel: "sequences at once (higher is better)",
		Series: series, LogX: true, XTicks: ticks, YFromZero: true, LegendAt: "top-right",
	})
}
