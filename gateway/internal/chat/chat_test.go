package chat

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func testdataDir(model string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", model)
}

type golden struct {
	ImageTokensPerImage int `json:"image_tokens_per_image"`
	Prompts             []struct {
		NumFrames    int    `json:"num_frames"`
		Question     string `json:"question"`
		PromptText   string `json:"prompt_text"`
		InputIDs     []int  `json:"input_ids"`
		TokenizerIDs []int  `json:"tokenizer_ids_before_expansion"`
	} `json:"prompts"`
}

func loadGolden(t *testing.T, model string) golden {
	b, err := os.ReadFile(filepath.Join(testdataDir(model), "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func imageQuestion(frames int, question string) Message {
	msg := Message{Role: "user"}
	for i := 0; i < frames; i++ {
		msg.Parts = append(msg.Parts, Part{Type: "image"})
	}
	msg.Parts = append(msg.Parts, Part{Type: "text", Text: question})
	return msg
}

func equal(a, b []int) bool {
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

func TestGoldenPrompts(t *testing.T) {
	for _, model := range []string{"tiny-llava-random", "tiny-llava-trained"} {
		m, err := Load(testdataDir(model))
		if err != nil {
			t.Fatal(err)
		}
		g := loadGolden(t, model)
		if m.TokensPerImage != g.ImageTokensPerImage {
			t.Fatalf("%s: tokens per image %d, want %d", model, m.TokensPerImage, g.ImageTokensPerImage)
		}
		for i, p := range g.Prompts {
			msgs := []Message{imageQuestion(p.NumFrames, p.Question)}
			text, err := m.Render(msgs, true)
			if err != nil {
				t.Fatal(err)
			}
			if text != p.PromptText {
				t.Errorf("%s prompt %d: rendered %q, want %q", model, i, text, p.PromptText)
			}
			pr, err := m.Build(msgs, p.NumFrames, CompressAfterPrompt)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(pr.IDs, p.InputIDs) {
				t.Errorf("%s prompt %d: ids\n got %v\nwant %v", model, i, pr.IDs, p.InputIDs)
			}
			if pr.ImageTokens != p.NumFrames*g.ImageTokensPerImage || pr.CompressAfter != 0 {
				t.Errorf("%s prompt %d: image tokens %d compress_after %d", model, i, pr.ImageTokens, pr.CompressAfter)
			}
		}
	}
}

func TestCompressAfter(t *testing.T) {
	m, err := Load(testdataDir("tiny-llava-random"))
	if err != nil {
		t.Fatal(err)
	}
	conv := []Message{
		{Role: "system", Text: "Be brief."},
		imageQuestion(2, "What shape is blue?"),
		{Role: "assistant", Text: "A circle."},
		{Role: "user", Text: "And red?"},
	}
	full, err := m.Build(conv, 2, CompressAfterPrompt)
	if err != nil {
		t.Fatal(err)
	}
	images, err := m.Build(conv, 2, CompressAfterImages)
	if err != nil {
		t.Fatal(err)
	}
	first, err := m.Build(conv, 2, CompressAfterFirstTurn)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(full.IDs, images.IDs) {
		t.Fatalf("compress_after must not change the ids")
	}
	// "images": the compression point is right after the last image token.
	if images.CompressAfter == 0 || images.IDs[images.CompressAfter-1] != m.ImageTokenID ||
		images.IDs[images.CompressAfter] == m.ImageTokenID {
		t.Fatalf("images point %d is not right after the last image token", images.CompressAfter)
	}
	if got := strings.Count(toText(m, images.IDs[:images.CompressAfter]), m.ImageToken); got != 2*m.TokensPerImage {
		t.Fatalf("the prefix holds %d image tokens", got)
	}
	// "first_turn": the first user turn with its generation prompt, then the rest.
	head, err := m.Build(conv[:2], 2, CompressAfterPrompt)
	if err != nil {
		t.Fatal(err)
	}
	if first.CompressAfter != len(head.IDs) || !equal(first.IDs[:len(head.IDs)], head.IDs) {
		t.Fatalf("first_turn point %d, head %d tokens", first.CompressAfter, len(head.IDs))
	}
	if !strings.HasSuffix(toText(m, first.IDs), "And red? ASSISTANT:") {
		t.Fatalf("the later turns are missing: %q", toText(m, first.IDs))
	}
	single, err := m.Build(conv[:2], 2, CompressAfterFirstTurn)
	if err != nil || single.CompressAfter != 0 {
		t.Fatalf("one turn: point %v err %v, want 0 (the whole prompt)", single.CompressAfter, err)
	}
}

func toText(m *Model, ids []int) string { return m.Tok.Decode(ids, false) }

func TestBuildErrors(t *testing.T) {
	m, err := Load(testdataDir("tiny-llava-random"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		msgs     []Message
		images   int
		compress string
		param    string
	}{
		{"placeholder in text", []Message{{Role: "user", Text: "look <image>"}}, 0, "", "messages"},
		{"image count mismatch", []Message{imageQuestion(1, "q")}, 2, "", "messages"},
		{"images point without images", []Message{{Role: "user", Text: "hi"}}, 0, CompressAfterImages, "kv_cache.compress_after"},
		{"unknown point", []Message{{Role: "user", Text: "hi"}}, 0, "middle", "kv_cache.compress_after"},
		{"first_turn without user", []Message{{Role: "system", Text: "hi"}}, 0, CompressAfterFirstTurn, "kv_cache.compress_after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Build(tc.msgs, tc.images, tc.compress)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Param != tc.param {
				t.Fatalf("err = %v, want an InputError naming %s", err, tc.param)
			}
		})
	}
}

func TestRaiseException(t *testing.T) {
	tok := mustModel(t).Tok
	m, err := New(tok, `{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must start with user') }}{% endif %}ok`, modelConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Render([]Message{{Role: "assistant", Text: "x"}}, true)
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(ie.Message, "must start with user") {
		t.Fatalf("err = %v", err)
	}
	if out, err := m.Render([]Message{{Role: "user", Text: "x"}}, true); err != nil || out != "ok" {
		t.Fatalf("out %q err %v", out, err)
	}
}

func TestTemplateMayNotInclude(t *testing.T) {
	m, err := New(mustModel(t).Tok, `{% include "/etc/passwd" %}`, modelConfig{})
	if err == nil {
		_, err = m.Render(nil, true)
	}
	if err == nil {
		t.Fatal("an include must fail")
	}
}

func mustModel(t *testing.T) *Model {
	m, err := Load(testdataDir("tiny-llava-random"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStopMatcher(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stops   []string
		deltas  []string
		want    string
		stopped bool
	}{
		{"no stop", []string{"END"}, []string{"ab", "c"}, "abc", false},
		{"inside a delta", []string{"END"}, []string{"abENDcd"}, "ab", true},
		{"across deltas", []string{"END"}, []string{"abE", "N", "Dxx"}, "ab", true},
		{"false start released", []string{"END"}, []string{"abE", "Nx"}, "abENx", false},
		{"earliest of several", []string{"yz", "b"}, []string{"aby", "z"}, "a", true},
		{"multibyte", []string{"停止"}, []string{"好停", "止了"}, "好", true},
		{"held at end", []string{"END"}, []string{"abEN"}, "abEN", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewStopMatcher(tc.stops)
			var sb strings.Builder
			stopped := false
			for _, d := range tc.deltas {
				out, s := m.Push(d)
				sb.WriteString(out)
				if s {
					stopped = true
					break
				}
			}
			if !stopped {
				sb.WriteString(m.Flush())
			}
			if sb.String() != tc.want || stopped != tc.stopped {
				t.Fatalf("got %q stopped=%v, want %q stopped=%v", sb.String(), stopped, tc.want, tc.stopped)
			}
		})
	}
}
