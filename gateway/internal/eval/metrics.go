package eval

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Metric names as they appear in the data files and the results.
const (
	MetricExactMatch      = "exact_match"
	MetricANLS            = "anls"
	MetricRelaxedAccuracy = "relaxed_accuracy"
)

// Scoring knobs. They change the numbers, so they are printed with every result.
const (
	// ANLSThreshold: DocVQA's tau; a normalised edit distance at or above it scores 0.
	ANLSThreshold = 0.5
	// RelaxedTolerance: ChartQA's relative error allowed on numeric answers.
	RelaxedTolerance = 0.05
)

// Score is the sample's score in [0, 1] under the named metric; the best over
// the reference answers.
func Score(metric, prediction string, answers []string) (float64, error) {
	var f func(string, string) float64
	switch metric {
	case MetricExactMatch, "":
		f = exactMatch
	case MetricANLS:
		f = nls
	case MetricRelaxedAccuracy:
		f = relaxedMatch
	default:
		return 0, fmt.Errorf("unknown metric %q (want %s, %s or %s)", metric, MetricExactMatch, MetricANLS, MetricRelaxedAccuracy)
	}
	best := 0.0
	for _, a := range answers {
		best = math.Max(best, f(prediction, a))
	}
	return best, nil
}

// exactMatch is the fixture's rule: both sides stripped of surrounding
// white space, then compared byte for byte (no case folding).
func exactMatch(prediction, answer string) float64 {
	if strings.TrimSpace(prediction) == strings.TrimSpace(answer) {
		return 1
	}
	return 0
}

// nls is one answer's term of ANLS (Biten et al., DocVQA): 1 - NL where NL is
// the Levenshtein distance over the longer length, after lower-casing and
// stripping; 0 when NL reaches the threshold.
func nls(prediction, answer string) float64 {
	p := strings.ToLower(strings.TrimSpace(prediction))
	a := strings.ToLower(strings.TrimSpace(answer))
	longest := max(utf8.RuneCountInString(p), utf8.RuneCountInString(a))
	if longest == 0 {
		return 1
	}
	nl := float64(levenshtein(p, a)) / float64(longest)
	if nl >= ANLSThreshold {
		return 0
	}
	return 1 - nl
}

// levenshtein counts rune insertions, deletions and substitutions.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// relaxedMatch is ChartQA's relaxed accuracy: numbers within the relative
// tolerance of a numeric answer count; anything else must match exactly
// (case-insensitive). A trailing % makes a number a percentage, so "45%"
// and "0.45" are the same value.
func relaxedMatch(prediction, answer string) float64 {
	p, a := strings.TrimSpace(prediction), strings.TrimSpace(answer)
	pv, pok := parseNumber(p)
	av, aok := parseNumber(a)
	if pok && aok {
		if av == 0 {
			if pv == 0 {
				return 1
			}
			return 0
		}
		if math.Abs(pv-av)/math.Abs(av) <= RelaxedTolerance {
			return 1
		}
		return 0
	}
	if strings.EqualFold(p, a) {
		return 1
	}
	return 0
}

func parseNumber(s string) (float64, bool) {
	s = strings.ReplaceAll(strings.TrimSpace(s), ",", "")
	scale := 1.0
	if strings.HasSuffix(s, "%") {
		s = strings.TrimSpace(strings.TrimSuffix(s, "%"))
		scale = 0.01
	}
	s = strings.TrimPrefix(s, "$")
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v * scale, true
}
