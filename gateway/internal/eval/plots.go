package eval

import (
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"

	vplot "github.com/vlcache/vlcache/gateway/internal/plot"
)

// WritePlots draws accuracy vs keep ratio (overall and per question type),
// the plot sample's per-layer budgets and sparsity, and its kept image
// patches; it returns the files written.
func WritePlots(dir string, res *Results, sum *Summary) ([]string, error) {
	var files []string
	cfg := res.Config
	acc, err := accuracyPanels(cfg, sum, []string{TypeAll})
	if err != nil {
		return nil, err
	}
	f, err := vplot.Save(acc, vg.Length(len(cfg.Protocols))*12*vg.Centimeter, 11*vg.Centimeter, filepath.Join(dir, "accuracy"))
	files = append(files, f...)
	if err != nil {
		return files, err
	}
	if len(sum.Types) > 1 {
		byType, err := accuracyPanels(cfg, sum, sum.Types)
		if err != nil {
			return files, err
		}
		f, err := vplot.Save(byType, vg.Length(len(cfg.Protocols))*12*vg.Centimeter, vg.Length(len(sum.Types))*10*vg.Centimeter,
			filepath.Join(dir, "accuracy_by_type"))
		files = append(files, f...)
		if err != nil {
			return files, err
		}
	}
	if res.Plot == nil || len(res.Plot.Details) == 0 {
		return files, nil
	}
	layers, err := layerPanels(cfg, res.Plot)
	if err != nil {
		return files, err
	}
	if layers != nil {
		f, err := vplot.Save(layers, 2*12*vg.Centimeter, vg.Length(len(layers))*8*vg.Centimeter, filepath.Join(dir, "layers"))
		files = append(files, f...)
		if err != nil {
			return files, err
		}
	}
	for _, d := range res.Plot.Details {
		if len(d.Stats.KeptPositions) == 0 || len(res.Plot.ImagePositions) == 0 {
			continue
		}
		panels, err := keptPanels(res.Plot, d)
		if err != nil {
			return files, err
		}
		name := fmt.Sprintf("kept_%s_%s_%s", d.Protocol, d.Policy, formatRatio(d.KeepRatio))
		f, err := vplot.Save(panels, vg.Length(len(res.Plot.ImagePositions))*3*vg.Centimeter+3*vg.Centimeter,
			vg.Length(len(panels))*4.5*vg.Centimeter, filepath.Join(dir, name))
		files = append(files, f...)
		if err != nil {
			return files, err
		}
	}
	return files, nil
}

func accuracyPanels(cfg Config, sum *Summary, types []string) ([][]*plot.Plot, error) {
	var rows [][]*plot.Plot
	for _, typ := range types {
		var row []*plot.Plot
		for _, proto := range cfg.Protocols {
			l := vplot.Lines{
				Title:  fmt.Sprintf("%s: accuracy vs keep ratio (%s)", proto, typ),
				XLabel: "keep ratio (fraction of KV cache kept, log)", YLabel: "accuracy",
				LogX: true, XTicks: cfg.KeepRatios, YMin: 0, YMax: 1.05,
			}
			for _, pol := range cfg.Policies {
				s := vplot.Series{Name: pol}
				for _, r := range cfg.KeepRatios {
					c, ok := sum.Lookup(proto, pol, r, typ)
					s.X = append(s.X, r)
					if ok {
						s.Y = append(s.Y, c.Accuracy)
					} else {
						s.Y = append(s.Y, math.NaN())
					}
				}
				l.Series = append(l.Series, s)
			}
			p, err := vplot.NewLines(l)
			if err != nil {
				return nil, err
			}
			row = append(row, p)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// layerPanels: per protocol, the budget per layer of each policy at the plot
// ratio (annotated with the kept count, coloured by the fraction of the
// compressed prefix) and the measured sparsity.
func layerPanels(cfg Config, ps *PlotSample) ([][]*plot.Plot, error) {
	kvHeads := 0
	for _, d := range ps.Details {
		if len(d.Stats.KeptPositions) > 0 {
			kvHeads = len(d.Stats.KeptPositions[0])
		}
	}
	var rows [][]*plot.Plot
	for _, proto := range cfg.Protocols {
		var budgets, sparsity [][]float64
		var budgetNames, sparsityNames []string
		nLayers := 0
		for _, pol := range cfg.Policies {
			d := findDetail(ps, proto, pol, cfg.PlotRatio)
			if d == nil || len(d.Stats.Layers) == 0 {
				continue
			}
			nLayers = max(nLayers, len(d.Stats.Layers))
			prefix := float64(d.Stats.PromptTokens)
			if kvHeads > 0 && d.Stats.KVTokensFull > 0 {
				prefix = float64(d.Stats.KVTokensFull) / float64(len(d.Stats.Layers)*kvHeads)
			}
			b := make([]float64, len(d.Stats.Layers))
			sp := make([]float64, len(d.Stats.Layers))
			measured := false
			for l, ls := range d.Stats.Layers {
				b[l] = float64(ls.Budget)
				if prefix > 0 {
					b[l] = float64(ls.Budget) / prefix
				}
				sp[l] = math.NaN()
				if ls.Sparsity != nil && *ls.Sparsity >= 0 {
					sp[l] = *ls.Sparsity
				}
				// Exactly 0 in every layer is how a policy that measures
				// nothing can look in older outputs (null read as 0).
				if ls.Sparsity != nil && *ls.Sparsity > 0 {
					measured = true
				}
			}
			budgets = append(budgets, b)
			budgetNames = append(budgetNames, pol)
			if measured {
				sparsity = append(sparsity, sp)
				sparsityNames = append(sparsityNames, pol)
			}
		}
		if len(budgets) == 0 {
			continue
		}
		layerNames := make([]string, nLayers)
		for i := range layerNames {
			layerNames[i] = fmt.Sprint(i)
		}
		bp, err := vplot.NewHeatMap(&vplot.Grid{Z: budgets, RowNames: budgetNames, ColNames: layerNames,
			Annotate: true, Format: "%.3f", Min: 0, Max: math.Max(2*cfg.PlotRatio, 0.0001),
			Title:  fmt.Sprintf("%s sample %s: layer budget / prefix length at keep ratio %g", proto, ps.ID, cfg.PlotRatio),
			XLabel: "layer"})
		if err != nil {
			return nil, err
		}
		row := []*plot.Plot{bp, nil}
		if len(sparsity) > 0 {
			sp, err := vplot.NewHeatMap(&vplot.Grid{Z: sparsity, RowNames: sparsityNames, ColNames: layerNames,
				Annotate: true, Format: "%.2f", Min: 0, Max: 1,
				Title: fmt.Sprintf("%s sample %s: measured layer sparsity", proto, ps.ID), XLabel: "layer"})
			if err != nil {
				return nil, err
			}
			row[1] = sp
		} else {
			row = row[:1]
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	// plot.Align needs a rectangular grid.
	width := 0
	for _, r := range rows {
		width = max(width, len(r))
	}
	for i := range rows {
		for len(rows[i]) < width {
			rows[i] = append(rows[i], emptyPanel())
		}
	}
	return rows, nil
}

func emptyPanel() *plot.Plot {
	p := plot.New()
	p.HideAxes()
	return p
}

func findDetail(ps *PlotSample, proto, pol string, ratio float64) *Detail {
	for i := range ps.Details {
		d := &ps.Details[i]
		if d.Protocol == proto && d.Policy == pol && d.KeepRatio == ratio && d.Stats != nil {
			return d
		}
	}
	return nil
}

// KeptGrid is, for one layer, the fraction of KV heads keeping each image
// patch: rows of the patch grid, frames side by side.
func KeptGrid(imagePositions [][]int, kept [][]int) [][]float64 {
	if len(imagePositions) == 0 || len(kept) == 0 {
		return nil
	}
	perImage := len(imagePositions[0])
	side := int(math.Round(math.Sqrt(float64(perImage))))
	if side*side != perImage {
		side = perImage // not a square grid: one row per image
	}
	cols := perImage / side
	grid := make([][]float64, side)
	for r := range grid {
		grid[r] = make([]float64, cols*len(imagePositions))
	}
	where := map[int][2]int{}
	for i, positions := range imagePositions {
		for k, pos := range positions {
			where[pos] = [2]int{k / cols, i*cols + k%cols}
		}
	}
	for _, head := range kept {
		for _, pos := range head {
			if rc, ok := where[pos]; ok {
				grid[rc[0]][rc[1]] += 1 / float64(len(kept))
			}
		}
	}
	return grid
}

func keptPanels(ps *PlotSample, d Detail) ([][]*plot.Plot, error) {
	var rows [][]*plot.Plot
	perImage := len(ps.ImagePositions[0])
	side := int(math.Round(math.Sqrt(float64(perImage))))
	cols := perImage / max(side, 1)
	var vlines []float64
	for i := 1; i < len(ps.ImagePositions); i++ {
		vlines = append(vlines, float64(i*cols)-0.5)
	}
	var marks [][2]int
	if t := ps.Sample.Target; t != nil && side*side == perImage {
		marks = append(marks, [2]int{t.Cell / cols, t.Frame*cols + t.Cell%cols})
	}
	frameNames := make([]string, 0, len(ps.ImagePositions)*cols)
	for i := range ps.ImagePositions {
		for c := 0; c < cols; c++ {
			name := ""
			if c == cols/2 {
				name = fmt.Sprintf("frame %d", i)
			}
			frameNames = append(frameNames, name)
		}
	}
	for l, heads := range d.Stats.KeptPositions {
		grid := KeptGrid(ps.ImagePositions, heads)
		if grid == nil {
			continue
		}
		budget := 0
		if l < len(d.Stats.Layers) {
			budget = d.Stats.Layers[l].Budget
		}
		rowNames := make([]string, len(grid))
		for r := range rowNames {
			rowNames[r] = fmt.Sprint(r)
		}
		p, err := vplot.NewHeatMap(&vplot.Grid{Z: grid, RowNames: rowNames, ColNames: frameNames, Min: 0, Max: 1, VLinesAt: vlines, MarkCells: marks,
			Title: fmt.Sprintf("sample %s %s %s keep %g, layer %d (budget %d): share of KV heads keeping each patch; box = the question's object",
				ps.ID, d.Protocol, d.Policy, d.KeepRatio, l, budget),
			YLabel: "patch row"})
		if err != nil {
			return nil, err
		}
		rows = append(rows, []*plot.Plot{p})
	}
	return rows, nil
}
