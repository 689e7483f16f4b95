package eval

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Sample is one evaluation item, whatever file it came from.
type Sample struct {
	ID       string
	Images   []string // file paths (resolved against the data file's folder), http(s) URLs or data: URLs
	Question string
	Answers  []string
	Metric   string // exact_match | anls | relaxed_accuracy
	Type     string // question type, for the per-type columns
	// FollowUp is the P3 second-turn question, if the data gives or allows one.
	FollowUp *FollowUp
	// Target is the object the question is about, when the data says (the
	// fixture does); the kept-positions plot marks it.
	Target *SceneObject
}

// FollowUp is a question asked in a second turn over the same images.
type FollowUp struct {
	Question string
	Answers  []string
	Type     string
}

// genericLine is the documented JSONL for real benchmarks (docs/eval.md).
type genericLine struct {
	ID       json.RawMessage `json:"id"`
	Images   []string        `json:"images"`
	Image    string          `json:"image"`
	Question string          `json:"question"`
	Answers  []string        `json:"answers"`
	Answer   *string         `json:"answer"`
	Metric   string          `json:"metric"`
	Type     string          `json:"type"`
	Template string          `json:"template"` // the fixture's name for the type
	Target   *SceneObject    `json:"target"`
	FollowUp *struct {
		Question string   `json:"question"`
		Answers  []string `json:"answers"`
		Answer   *string  `json:"answer"`
		Type     string   `json:"type"`
	} `json:"follow_up"`
}

// ReadJSONL reads the generic format; the fixture's eval.jsonl is a special
// case of it (answer instead of answers, template instead of type). Relative
// image paths are resolved against the file's folder. defaultMetric applies
// to lines without a metric.
func ReadJSONL(path, defaultMetric string) ([]*Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the data file: %w", err)
	}
	defer f.Close()
	return parseJSONL(f, filepath.Dir(path), path, defaultMetric)
}

func parseJSONL(r io.Reader, baseDir, name, defaultMetric string) ([]*Sample, error) {
	var out []*Sample
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		s, err := parseLine([]byte(text), baseDir, defaultMetric)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
		if s.ID == "" {
			s.ID = strconv.Itoa(lineNo - 1)
		}
		if seen[s.ID] {
			return nil, fmt.Errorf("%s:%d: duplicate id %q", name, lineNo, s.ID)
		}
		seen[s.ID] = true
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no samples", name)
	}
	return out, nil
}

func parseLine(b []byte, baseDir, defaultMetric string) (*Sample, error) {
	var g genericLine
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	s := &Sample{Question: g.Question, Metric: g.Metric, Type: g.Type, Target: g.Target}
	if s.Metric == "" {
		s.Metric = defaultMetric
	}
	if _, err := Score(s.Metric, "", nil); err != nil {
		return nil, err
	}
	if s.Type == "" {
		s.Type = g.Template
	}
	if len(g.ID) > 0 {
		var str string
		if err := json.Unmarshal(g.ID, &str); err == nil {
			s.ID = str
		} else {
			s.ID = strings.TrimSpace(string(g.ID)) // numeric ids keep their spelling
		}
	}
	if g.Question == "" {
		return nil, errors.New("question is missing")
	}
	s.Answers = append(s.Answers, g.Answers...)
	if g.Answer != nil {
		s.Answers = append(s.Answers, *g.Answer)
	}
	if len(s.Answers) == 0 {
		return nil, errors.New("answers is missing (a list of accepted answers)")
	}
	images := g.Images
	if g.Image != "" {
		images = append([]string{g.Image}, images...)
	}
	for _, im := range images {
		s.Images = append(s.Images, resolveImage(im, baseDir))
	}
	if g.FollowUp != nil {
		fu := &FollowUp{Question: g.FollowUp.Question, Answers: g.FollowUp.Answers, Type: g.FollowUp.Type}
		if g.FollowUp.Answer != nil {
			fu.Answers = append(fu.Answers, *g.FollowUp.Answer)
		}
		if fu.Question == "" || len(fu.Answers) == 0 {
			return nil, errors.New("follow_up needs a question and answers")
		}
		if fu.Type == "" {
			fu.Type = s.Type
		}
		s.FollowUp = fu
	}
	return s, nil
}

func resolveImage(ref, baseDir string) string {
	if isURL(ref) || filepath.IsAbs(ref) {
		return ref
	}
	return filepath.Join(baseDir, ref)
}

func isURL(ref string) bool {
	return strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://") || strings.HasPrefix(ref, "data:")
}

// ReadReference reads reference predictions (the fixture's
// predictions_full_cache.jsonl: {"id", "prediction"} per line) by id.
func ReadReference(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the reference predictions: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var line struct {
			ID         json.RawMessage `json:"id"`
			Prediction *string         `json:"prediction"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Prediction == nil || len(line.ID) == 0 {
			return nil, fmt.Errorf("%s:%d: want {\"id\", \"prediction\"}", path, n)
		}
		id := strings.TrimSpace(string(line.ID))
		var str string
		if json.Unmarshal(line.ID, &str) == nil {
			id = str
		}
		out[id] = *line.Prediction
	}
	return out, sc.Err()
}
