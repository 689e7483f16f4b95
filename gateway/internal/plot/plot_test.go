package plot

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
)

func TestSaveWritesPNGAndSVG(t *testing.T) {
	// One panel with an all-NaN series: a log axis must still draw.
	lines, err := NewLines(Lines{Title: "t", LogX: true, XTicks: []float64{0.02, 0.1, 1},
		Series: []Series{{Name: "a", X: []float64{0.02, 0.1, 1}, Y: []float64{0.5, 0.6, 0.7}}, {Name: "empty", X: []float64{1}, Y: []float64{math.NaN()}}}})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := NewLines(Lines{Title: "nothing", LogX: true, XTicks: []float64{0.1, 1}})
	if err != nil {
		t.Fatal(err)
	}
	heat, err := NewHeatMap(&Grid{Z: [][]float64{{0, 0.5}, {1, math.NaN()}}, RowNames: []string{"a", "b"}, ColNames: []string{"0", "1"},
		Annotate: true, Format: "%.1f", Max: 1, MarkCells: [][2]int{{0, 1}}, VLinesAt: []float64{0.5}})
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "sub", "fig")
	files, err := Save([][]*plot.Plot{{lines, empty, heat}}, 20*vg.Centimeter, 8*vg.Centimeter, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("files %v", files)
	}
	f, err := os.Open(base + ".png")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 700 {
		t.Fatalf("PNG is %dx%d", b.Dx(), b.Dy())
	}
	svg, err := os.ReadFile(base + ".svg")
	if err != nil || !strings.Contains(string(svg), "<svg") {
		t.Fatalf("SVG: %v", err)
	}
}

func TestRefusesEmpty(t *testing.T) {
	if _, err := NewHeatMap(&Grid{}); err == nil {
		t.Fatal("empty heat map accepted")
	}
	if _, err := Save(nil, vg.Centimeter, vg.Centimeter, filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("empty figure accepted")
	}
}
