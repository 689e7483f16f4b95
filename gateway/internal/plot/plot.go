// Package plot draws the evaluation and load-test figures with gonum/plot,
// each written as PNG and SVG.
package plot

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// PNGDPI is the resolution of the PNG files.
const PNGDPI = 96

// Save writes a grid of plots (rows of columns) to base.png and base.svg and
// returns the two paths.
func Save(plots [][]*plot.Plot, width, height vg.Length, base string) ([]string, error) {
	if len(plots) == 0 || len(plots[0]) == 0 {
		return nil, fmt.Errorf("nothing to draw for %s", base)
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return nil, err
	}
	tiles := draw.Tiles{Rows: len(plots), Cols: len(plots[0]), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	drawAll := func(c vg.CanvasSizer) {
		dc := draw.New(c)
		canvases := plot.Align(plots, tiles, dc)
		for i := range plots {
			for j := range plots[i] {
				if plots[i][j] != nil {
					plots[i][j].Draw(canvases[i][j])
				}
			}
		}
	}
	png := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(PNGDPI), vgimg.UseBackgroundColor(color.White))
	drawAll(png)
	svg := vgsvg.New(width, height)
	drawAll(svg)
	var out []string
	for _, item := range []struct {
		ext   string
		write func(f *os.File) error
	}{
		{".png", func(f *os.File) error { _, err := vgimg.PngCanvas{Canvas: png}.WriteTo(f); return err }},
		{".svg", func(f *os.File) error { _, err := svg.WriteTo(f); return err }},
	} {
		path := base + item.ext
		f, err := os.Create(path)
		if err != nil {
			return out, err
		}
		if err := item.write(f); err != nil {
			f.Close()
			return out, fmt.Errorf("failed to write %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return out, err
		}
		out = append(out, path)
	}
	return out, nil
}

// Series is one line of a line plot.
type Series struct {
	Name string
	X, Y []float64
}

// Lines is a panel of lines with points.
type Lines struct {
	Title, XLabel, YLabel string
	Series                []Series
	LogX                  bool
	XTicks                []float64 // labelled x positions (nil: automatic)
	YMin, YMax            float64   // both 0: automatic
	YFromZero             bool      // automatic top, bottom at 0
	LegendAt              string    // "top-left" or "top-right" ("": bottom right)
}

// NewLines builds a line panel.
func NewLines(l Lines) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = l.Title
	p.X.Label.Text = l.XLabel
	p.Y.Label.Text = l.YLabel
	p.Add(plotter.NewGrid())
	if l.LogX {
		p.X.Scale = plot.LogScale{}
	}
	if len(l.XTicks) > 0 {
		// Fixed range, so an empty panel still has a valid (log) axis.
		lo, hi := l.XTicks[0], l.XTicks[0]
		for _, x := range l.XTicks {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		p.X.Min, p.X.Max = lo, hi
		if l.LogX {
			p.X.Min, p.X.Max = lo/1.25, hi*1.25
		}
		var ticks plot.ConstantTicks
		for _, x := range l.XTicks {
			ticks = append(ticks, plot.Tick{Value: x, Label: fmt.Sprintf("%g", x)})
		}
		p.X.Tick.Marker = ticks
	} else if l.LogX {
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	for i, s := range l.Series {
		xys := make(plotter.XYs, 0, len(s.X))
		for k := range s.X {
			if math.IsNaN(s.Y[k]) {
				continue
			}
			xys = append(xys, plotter.XY{X: s.X[k], Y: s.Y[k]})
		}
		if len(xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i / 7)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(s.Name, line, points)
	}
	// Bottom right: at keep ratio 1 every policy is at full-cache accuracy,
	// so that corner is empty.
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = -4 * vg.Millimeter
	p.Legend.YOffs = 6 * vg.Millimeter
	switch l.LegendAt {
	case "top-left":
		p.Legend.Top, p.Legend.Left = true, true
		p.Legend.XOffs, p.Legend.YOffs = 4*vg.Millimeter, -2*vg.Millimeter
	case "top-right":
		p.Legend.Top = true
		p.Legend.YOffs = -2 * vg.Millimeter
	}
	if l.YMin != 0 || l.YMax != 0 {
		p.Y.Min, p.Y.Max = l.YMin, l.YMax
	}
	if l.YFromZero {
		p.Y.Min = 0
		p.Y.Max = math.Max(p.Y.Max*1.05, 1e-9)
	}
	return p, nil
}

// Grid is a matrix for a heat map; Z[row][col], row 0 drawn at the top.
type Grid struct {
	Z          [][]float64
	XStart     float64 // x of column 0 (columns are 1 apart)
	RowNames   []string
	ColNames   []string
	Annotate   bool   // print each value in its cell
	Format     string // for Annotate, e.g. "%.2f"
	Min, Max   float64
	Title      string
	XLabel     string
	YLabel     string
	MarkCells  [][2]int // (row, col) cells outlined in a contrasting colour
	VLinesAt   []float64
	PaletteLen int
}

type gridXYZ struct{ g *Grid }

func (g gridXYZ) Dims() (c, r int) { return len(g.g.Z[0]), len(g.g.Z) }
func (g gridXYZ) Z(c, r int) float64 {
	return g.g.Z[len(g.g.Z)-1-r][c] // heat map rows grow upwards
}
func (g gridXYZ) X(c int) float64 { return g.g.XStart + float64(c) }
func (g gridXYZ) Y(r int) float64 { return float64(r) }

// NewHeatMap builds a heat map panel; NaN cells are drawn light grey.
func NewHeatMap(g *Grid) (*plot.Plot, error) {
	if len(g.Z) == 0 || len(g.Z[0]) == 0 {
		return nil, fmt.Errorf("empty heat map %q", g.Title)
	}
	n := g.PaletteLen
	if n == 0 {
		n = 64
	}
	p := plot.New()
	p.Title.Text = g.Title
	p.X.Label.Text = g.XLabel
	p.Y.Label.Text = g.YLabel
	// Reversed black body: 0 is white (nothing kept), 1 is near black, so
	// the dropped patches read as blank paper.
	cmap := palette.Reverse(moreland.BlackBody())
	cmap.SetMin(0)
	cmap.SetMax(1)
	h := plotter.NewHeatMap(gridXYZ{g}, cmap.Palette(n))
	h.Min, h.Max = g.Min, g.Max
	h.NaN = color.Gray{Y: 220}
	p.Add(h)
	rows := len(g.Z)
	if g.RowNames != nil {
		names := make([]string, rows)
		for i := range names {
			names[i] = g.RowNames[rows-1-i]
		}
		p.NominalY(names...)
	}
	if g.ColNames != nil {
		var ticks plot.ConstantTicks
		for i, name := range g.ColNames {
			ticks = append(ticks, plot.Tick{Value: g.XStart + float64(i), Label: name})
		}
		p.X.Tick.Marker = ticks
	}
	if g.Annotate {
		var xyl plotter.XYLabels
		var dark []bool
		for r, row := range g.Z {
			for c, v := range row {
				if math.IsNaN(v) {
					continue
				}
				xyl.XYs = append(xyl.XYs, plotter.XY{X: g.XStart + float64(c), Y: float64(rows - 1 - r)})
				xyl.Labels = append(xyl.Labels, fmt.Sprintf(g.Format, v))
				dark = append(dark, g.Max > g.Min && (v-g.Min)/(g.Max-g.Min) > 0.45)
			}
		}
		if len(xyl.XYs) > 0 {
			labels, err := plotter.NewLabels(xyl)
			if err != nil {
				return nil, err
			}
			for i := range labels.TextStyle {
				labels.TextStyle[i].XAlign = draw.XCenter
				labels.TextStyle[i].YAlign = draw.YCenter
				// White on the dark end of the palette, black on the light end.
				labels.TextStyle[i].Color = color.Black
				if dark[i] {
					labels.TextStyle[i].Color = color.White
				}
			}
			p.Add(labels)
		}
	}
	for _, x := range g.VLinesAt {
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: -0.5}, {X: x, Y: float64(rows) - 0.5}})
		if err != nil {
			return nil, err
		}
		l.Color = color.RGBA{R: 40, G: 90, B: 200, A: 255}
		l.Width = vg.Points(1.5)
		p.Add(l)
	}
	for _, cell := range g.MarkCells {
		x := g.XStart + float64(cell[1])
		y := float64(rows - 1 - cell[0])
		box := plotter.XYs{{X: x - 0.5, Y: y - 0.5}, {X: x + 0.5, Y: y - 0.5}, {X: x + 0.5, Y: y + 0.5}, {X: x - 0.5, Y: y + 0.5}, {X: x - 0.5, Y: y - 0.5}}
		l, err := plotter.NewLine(box)
		if err != nil {
			return nil, err
		}
		l.Color = color.RGBA{G: 200, B: 255, A: 255}
		l.Width = vg.Points(2)
		p.Add(l)
	}
	return p, nil
}
