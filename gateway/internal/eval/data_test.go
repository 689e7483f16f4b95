package eval

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vlcache/vlcache/gateway/internal/chat"
)

const fixtureModel = "../../../testdata/tiny-llava-trained"

func fixtureEval(t testing.TB) string { return filepath.Join(fixtureModel, "eval") }

func loadFixture(t testing.TB) []*Sample {
	t.Helper()
	samples, err := ReadJSONL(filepath.Join(fixtureEval(t), "eval.jsonl"), MetricExactMatch)
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

func TestReadFixture(t *testing.T) {
	samples := loadFixture(t)
	if len(samples) != 300 {
		t.Fatalf("read %d samples, want 300", len(samples))
	}
	s := samples[0]
	if s.ID != "0" || s.Question != "What shape is green?" || len(s.Answers) != 1 || s.Answers[0] != "circle" ||
		s.Type != TemplateShapeOfColor || s.Metric != MetricExactMatch || len(s.Images) != 8 {
		t.Fatalf("sample 0 = %+v", s)
	}
	if s.Target == nil || s.Target.Frame != 6 || s.Target.Cell != 44 {
		t.Fatalf("sample 0 target = %+v", s.Target)
	}
	for _, im := range s.Images {
		if _, err := os.Stat(im); err != nil {
			t.Fatalf("image path not resolved against the data folder: %v", err)
		}
	}
	types := map[string]int{}
	for _, s := range samples {
		types[s.Type]++
	}
	if len(types) != 4 || types[TemplatePositionOfObject] != 75 {
		t.Fatalf("question types %v", types)
	}
}

func TestReadGeneric(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "docvqa.jsonl")
	lines := `{"id": "q1", "image": "pages/a.png", "question": "What is the total?", "answers": ["$12", "12"], "metric": "anls", "type": "docvqa"}
{"images": ["https://example.com/x.jpg", "/abs/y.png"], "question": "How many?", "answers": ["3"], "follow_up": {"question": "And red?", "answer": "1"}}

{"id": 7, "image": "data:image/png;base64,AAAA", "question": "Value?", "answers": ["4.5"], "metric": "relaxed_accuracy"}
`
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	samples, err := ReadJSONL(path, MetricExactMatch)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 3 {
		t.Fatalf("got %d samples", len(samples))
	}
	a, b, c := samples[0], samples[1], samples[2]
	if a.ID != "q1" || a.Metric != MetricANLS || a.Type != "docvqa" || a.Images[0] != filepath.Join(dir, "pages/a.png") || len(a.Answers) != 2 {
		t.Fatalf("line 1 = %+v", a)
	}
	if b.ID != "1" || b.Metric != MetricExactMatch || b.Images[0] != "https://example.com/x.jpg" || b.Images[1] != "/abs/y.png" {
		t.Fatalf("line 2 = %+v", b)
	}
	if b.FollowUp == nil || b.FollowUp.Question != "And red?" || b.FollowUp.Answers[0] != "1" {
		t.Fatalf("line 2 follow-up = %+v", b.FollowUp)
	}
	if c.ID != "7" || c.Metric != MetricRelaxedAccuracy || !strings.HasPrefix(c.Images[0], "data:") {
		t.Fatalf("line 4 = %+v", c)
	}
}

func TestReadGenericErrors(t *testing.T) {
	for name, body := range map[string]string{
		"no question":  `{"answers": ["a"]}`,
		"no answers":   `{"question": "q"}`,
		"bad metric":   `{"question": "q", "answers": ["a"], "metric": "bleu"}`,
		"not json":     `{"question": `,
		"duplicate id": `{"id": "a", "question": "q", "answers": ["a"]}` + "\n" + `{"id": "a", "question": "q", "answers": ["a"]}`,
		"empty file":   "\n",
		"bad followup": `{"question": "q", "answers": ["a"], "follow_up": {"question": "x"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.jsonl")
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadJSONL(path, MetricExactMatch); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestReadReference(t *testing.T) {
	ref, err := ReadReference(filepath.Join(fixtureEval(t), "predictions_full_cache.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ref) != 300 || ref["0"] != "circle" || ref["1"] != "top right" {
		t.Fatalf("reference: %d entries, 0=%q 1=%q", len(ref), ref["0"], ref["1"])
	}
}

// The templates must reproduce every fixture question and answer from the
// scene's description of its target.
func TestFormQuestionReproducesFixture(t *testing.T) {
	samples := loadFixture(t)
	scenes, err := ReadScenes(filepath.Join(fixtureEval(t), "scenes.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		sc := scenes[s.ID]
		if sc == nil {
			t.Fatalf("no scene for sample %s", s.ID)
		}
		var target *SceneObject
		for i, o := range sc.Objects {
			if o.Frame == s.Target.Frame && o.Cell == s.Target.Cell {
				target = &sc.Objects[i]
				if !uniquelyNamed(s.Type, sc.Objects, i) {
					t.Fatalf("sample %s: the fixture's target is not uniquely named under %s", s.ID, s.Type)
				}
			}
		}
		if target == nil {
			t.Fatalf("sample %s: target not among the scene's objects", s.ID)
		}
		q, a, err := FormQuestion(s.Type, *target)
		if err != nil {
			t.Fatal(err)
		}
		if q != s.Question || a != s.Answers[0] {
			t.Fatalf("sample %s: formed %q -> %q, fixture %q -> %q", s.ID, q, a, s.Question, s.Answers[0])
		}
	}
}

func TestFollowUps(t *testing.T) {
	samples := loadFixture(t)
	scenes, err := ReadScenes(filepath.Join(fixtureEval(t), "scenes.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	n := AttachFollowUps(samples, scenes)
	if n < 290 {
		t.Fatalf("only %d of 300 samples got a follow-up", n)
	}
	sameTemplate := 0
	for _, s := range samples {
		fu := s.FollowUp
		if fu == nil {
			continue
		}
		if fu.Question == s.Question {
			t.Fatalf("sample %s: follow-up repeats the question", s.ID)
		}
		if fu.Type == s.Type {
			sameTemplate++
		}
		// The follow-up's answer must follow from the one object it names.
		matches := 0
		for i, o := range scenes[s.ID].Objects {
			q, a, _ := FormQuestion(fu.Type, o)
			if q == fu.Question {
				matches++
				if a != fu.Answers[0] || !uniquelyNamed(fu.Type, scenes[s.ID].Objects, i) {
					t.Fatalf("sample %s: follow-up %q answer %q, object gives %q", s.ID, fu.Question, fu.Answers[0], a)
				}
			}
		}
		if matches != 1 {
			t.Fatalf("sample %s: follow-up %q names %d objects", s.ID, fu.Question, matches)
		}
	}
	if sameTemplate < n/2 {
		t.Fatalf("only %d of %d follow-ups keep the first question's template", sameTemplate, n)
	}
}

func TestPromptsMatchFixture(t *testing.T) {
	model, err := chat.Load(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	var raw []struct {
		Prompt      string `json:"prompt"`
		NumInputIDs int    `json:"num_input_ids"`
	}
	b, err := os.ReadFile(filepath.Join(fixtureEval(t), "eval.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n")[:20] {
		var r struct {
			Prompt      string `json:"prompt"`
			NumInputIDs int    `json:"num_input_ids"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		raw = append(raw, r)
	}
	samples := loadFixture(t)
	scenes, _ := ReadScenes(filepath.Join(fixtureEval(t), "scenes.jsonl"))
	AttachFollowUps(samples, scenes)
	for i, want := range raw {
		s := samples[i]
		p1, err := model.Build(Messages(s, ProtocolSingleTurn, ""), len(s.Images), CompressPoint(ProtocolSingleTurn))
		if err != nil {
			t.Fatal(err)
		}
		if p1.Text != want.Prompt || len(p1.IDs) != want.NumInputIDs || p1.CompressAfter != 0 {
			t.Fatalf("sample %s: P1 prompt %q (%d ids), fixture %q (%d ids)", s.ID, p1.Text, len(p1.IDs), want.Prompt, want.NumInputIDs)
		}
		if p1.IDs[s.Target.TokenIndex] != model.ImageTokenID {
			t.Fatalf("sample %s: the target's token index %d is not an image token", s.ID, s.Target.TokenIndex)
		}
		p2, err := model.Build(Messages(s, ProtocolContextFirst, ""), len(s.Images), CompressPoint(ProtocolContextFirst))
		if err != nil {
			t.Fatal(err)
		}
		cp := p2.CompressAfter
		if !equalInts(p2.IDs, p1.IDs) || cp <= 0 || p2.IDs[cp-1] != model.ImageTokenID || p2.IDs[cp] == model.ImageTokenID {
			t.Fatalf("sample %s: P2 compress point %d is not right after the last image token", s.ID, cp)
		}
		p3, err := model.Build(Messages(s, ProtocolFollowUp, s.Answers[0]), len(s.Images), CompressPoint(ProtocolFollowUp))
		if err != nil {
			t.Fatal(err)
		}
		if p3.CompressAfter != len(p1.IDs) || !equalInts(p3.IDs[:len(p1.IDs)], p1.IDs) {
			t.Fatalf("sample %s: P3 compress point %d, want the first turn's %d ids as a prefix", s.ID, p3.CompressAfter, len(p1.IDs))
		}
		if !strings.HasSuffix(p3.Text, " "+s.Answers[0]+"</s>USER: "+s.FollowUp.Question+" ASSISTANT:") {
			t.Fatalf("sample %s: P3 text %q", s.ID, p3.Text)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
