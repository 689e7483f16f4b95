package chat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vlcache/vlcache/gateway/internal/tokenizer"
)

// A real, complex chat template (Qwen3's) renders as Jinja2 renders it in
// transformers, and the prompt ids match Hugging Face's (testdata/gen_templates.py).
func TestTemplateOracle(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "templates_oracle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var oracle map[string][]struct {
		Messages []struct{ Role, Content string } `json:"messages"`
		Text     string                           `json:"text"`
		IDs      []int                            `json:"ids"`
	}
	if err := json.Unmarshal(b, &oracle); err != nil {
		t.Fatal(err)
	}
	for name, cases := range oracle {
		dir := filepath.Join(testdataDir(""), "..", ".deps", "tokenizers", name)
		tok, err := tokenizer.Load(dir)
		if err != nil {
			t.Fatalf("%s (run `make deps-gateway`): %v", name, err)
		}
		var cfg tokenizer.Config
		if err := readJSON(filepath.Join(dir, "tokenizer_config.json"), &cfg); err != nil {
			t.Fatal(err)
		}
		m, err := New(tok, string(cfg.ChatTemplate), modelConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			msgs := make([]Message, len(c.Messages))
			for k, msg := range c.Messages {
				msgs[k] = Message{Role: msg.Role, Text: msg.Content}
			}
			p, err := m.Build(msgs, 0, CompressAfterPrompt)
			if err != nil {
				t.Fatal(err)
			}
			if p.Text != c.Text {
				t.Errorf("%s case %d: rendered %q, want %q", name, i, p.Text, c.Text)
			}
			if !equal(p.IDs, c.IDs) {
				t.Errorf("%s case %d: ids\n got %v\nwant %v", name, i, p.IDs, c.IDs)
			}
		}
	}
}
