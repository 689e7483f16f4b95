package eval

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// LoadResults reads a finished run's outputs (summary.json, predictions.jsonl
// or predictions.jsonl.gz, plot_sample.json if present) so its tables and
// plots can be drawn again; the protocols, policies and keep ratios come back
// in the run's order. samples (may be nil) restores the plot sample's target.
func LoadResults(dir string, samples []*Sample) (*Results, []Setting, error) {
	var sum Summary
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		return nil, nil, fmt.Errorf("failed to parse summary.json: %w", err)
	}
	var samplesN struct {
		Samples   int `json:"samples"`
		FollowUps int `json:"follow_ups"`
	}
	_ = json.Unmarshal(b, &samplesN)
	res := &Results{Samples: samplesN.Samples, FollowUps: samplesN.FollowUps}
	seen := map[string]bool{}
	add := func(list *[]string, v string) {
		if !seen[v] {
			seen[v] = true
			*list = append(*list, v)
		}
	}
	seenRatio := map[float64]bool{}
	for _, c := range sum.Cells {
		add(&res.Config.Protocols, "protocol:"+c.Protocol)
		add(&res.Config.Policies, "policy:"+c.Policy)
		if !seenRatio[c.KeepRatio] {
			seenRatio[c.KeepRatio] = true
			res.Config.KeepRatios = append(res.Config.KeepRatios, c.KeepRatio)
		}
	}
	for i, p := range res.Config.Protocols {
		res.Config.Protocols[i] = p[len("protocol:"):]
	}
	for i, p := range res.Config.Policies {
		res.Config.Policies[i] = p[len("policy:"):]
	}
	var r io.Reader
	f, err := os.Open(filepath.Join(dir, "predictions.jsonl"))
	if err != nil {
		f, err = os.Open(filepath.Join(dir, "predictions.jsonl.gz"))
		if err != nil {
			return nil, nil, fmt.Errorf("no predictions.jsonl(.gz) in %s", dir)
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		r = gz
	} else {
		r = f
	}
	defer f.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		p := &Prediction{}
		if err := json.Unmarshal(sc.Bytes(), p); err != nil {
			return nil, nil, fmt.Errorf("bad prediction line: %w", err)
		}
		res.Predictions = append(res.Predictions, p)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if pb, err := os.ReadFile(filepath.Join(dir, "plot_sample.json")); err == nil {
		ps := &PlotSample{}
		if err := json.Unmarshal(pb, ps); err != nil {
			return nil, nil, fmt.Errorf("failed to parse plot_sample.json: %w", err)
		}
		for _, s := range samples {
			if s.ID == ps.ID {
				ps.Sample = s
			}
		}
		if ps.Sample == nil {
			ps.Sample = &Sample{ID: ps.ID}
		}
		res.Plot = ps
	}
	return res, sum.Settings, nil
}
