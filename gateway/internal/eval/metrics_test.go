package eval

import (
	"math"
	"testing"
)

func TestScore(t *testing.T) {
	cases := []struct {
		name, metric, pred string
		answers            []string
		want               float64
	}{
		{"exact equal after strip", MetricExactMatch, "  top left ", []string{"top left"}, 1},
		{"exact is case-sensitive", MetricExactMatch, "Circle", []string{"circle"}, 0},
		{"exact any answer", MetricExactMatch, "two", []string{"one", "two"}, 1},
		{"exact empty metric name", "", "red", []string{"red"}, 1},
		{"exact partial is wrong", MetricExactMatch, "top", []string{"top left"}, 0},
		{"anls identical", MetricANLS, "Invoice", []string{"invoice"}, 1},
		{"anls one edit of five", MetricANLS, "hallo", []string{"hello"}, 0.8},
		{"anls at threshold is zero", MetricANLS, "abcd", []string{"abxy"}, 0},
		{"anls just under threshold", MetricANLS, "abcde", []string{"abxye"}, 0.6},
		{"anls best answer", MetricANLS, "12 May", []string{"june", "12 may"}, 1},
		{"anls unicode counts runes", MetricANLS, "café", []string{"cafe"}, 0.75},
		{"relaxed within 5%", MetricRelaxedAccuracy, "104", []string{"100"}, 1},
		{"relaxed at 5%", MetricRelaxedAccuracy, "95", []string{"100"}, 1},
		{"relaxed beyond 5%", MetricRelaxedAccuracy, "94.9", []string{"100"}, 0},
		{"relaxed percent", MetricRelaxedAccuracy, "45%", []string{"0.46"}, 1},
		{"relaxed zero target", MetricRelaxedAccuracy, "0.01", []string{"0"}, 0},
		{"relaxed zero both", MetricRelaxedAccuracy, "0", []string{"0.0"}, 1},
		{"relaxed text folds case", MetricRelaxedAccuracy, "Yes", []string{"yes"}, 1},
		{"relaxed text mismatch", MetricRelaxedAccuracy, "no", []string{"yes"}, 0},
		{"relaxed thousands", MetricRelaxedAccuracy, "1,200", []string{"1190"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Score(c.metric, c.pred, c.answers)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-c.want) > 1e-9 {
				t.Fatalf("Score(%q, %q, %q) = %v, want %v", c.metric, c.pred, c.answers, got, c.want)
			}
		})
	}
}

func TestScoreUnknownMetric(t *testing.T) {
	if _, err := Score("bleu", "a", []string{"a"}); err == nil {
		t.Fatal("want an error for an unknown metric")
	}
}

func TestLevenshtein(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2}} {
		if got := levenshtein(c.a, c.b); got != c.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
