package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

type oracleCase struct {
	Text               string `json:"text"`
	IDs                []int  `json:"ids"`
	IDsNoSpecial       []int  `json:"ids_no_special"`
	Decoded            string `json:"decoded"`
	DecodedSkipSpecial string `json:"decoded_skip_special"`
}

type oracleSet struct {
	Cases         []oracleCase `json:"cases"`
	RandomDecodes []struct {
		IDs     []int  `json:"ids"`
		Decoded string `json:"decoded"`
	} `json:"random_decodes"`
}

// oracleDirs says where each oracle tokenizer lives. The real Qwen and Llama
// files are downloaded by `make deps-gateway`; a missing file fails the test
// so that CI cannot pass without the oracle.
func oracleDirs(root string) map[string]string {
	return map[string]string{
		"fixture": filepath.Join(root, "testdata", "tiny-llava-random"),
		"qwen3":   filepath.Join(root, ".deps", "tokenizers", "qwen3"),
		"llama2":  filepath.Join(root, ".deps", "tokenizers", "llama2"),
		// derived from llama2 by metaspaceVariant, as gen_oracle.py does
		"llama2_metaspace": filepath.Join(root, ".deps", "tokenizers", "llama2"),
	}
}

// loadOracleTokenizer loads an oracle's tokenizer; a missing file fails the
// test so that CI cannot pass without the oracle.
func loadOracleTokenizer(t *testing.T, name, dir string) *Tokenizer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatalf("oracle tokenizer missing (run `make deps-gateway`): %v", err)
	}
	if !strings.HasSuffix(name, "_metaspace") {
		tok, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	data, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Parse(metaspaceVariant(t, data))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// metaspaceVariant rewrites a Llama-2 tokenizer.json into the newer
// Mistral style: Metaspace pre-tokenizer and decoder, no normalizer.
func metaspaceVariant(t *testing.T, data []byte) []byte {
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false}
	cfg["normalizer"] = nil
	cfg["pre_tokenizer"] = meta
	cfg["decoder"] = map[string]any{"type": "Sequence", "decoders": []any{meta, map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"}}}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func loadOracle(t *testing.T) map[string]oracleSet {
	data, err := os.ReadFile(filepath.Join("testdata", "oracle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]oracleSet
	if err := json.Unmarshal(data, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOracle(t *testing.T) {
	oracle := loadOracle(t)
	dirs := oracleDirs(repoRoot(t))
	for name, set := range oracle {
		t.Run(name, func(t *testing.T) {
			tok := loadOracleTokenizer(t, name, dirs[name])
			for i, c := range set.Cases {
				if got := tok.Encode(c.Text, true); !equalIDs(got, c.IDs) {
					t.Errorf("case %d %q: Encode(special)\n got %v\nwant %v", i, c.Text, got, c.IDs)
				}
				if got := tok.Encode(c.Text, false); !equalIDs(got, c.IDsNoSpecial) {
					t.Errorf("case %d %q: Encode(plain)\n got %v\nwant %v", i, c.Text, got, c.IDsNoSpecial)
				}
				if got := tok.Decode(c.IDs, false); got != c.Decoded {
					t.Errorf("case %d: Decode = %q, want %q", i, got, c.Decoded)
				}
				if got := tok.Decode(c.IDs, true); got != c.DecodedSkipSpecial {
					t.Errorf("case %d: Decode(skip special) = %q, want %q", i, got, c.DecodedSkipSpecial)
				}
			}
			for i, c := range set.RandomDecodes {
				if got := tok.Decode(c.IDs, false); got != c.Decoded {
					t.Errorf("random %d %v: Decode = %q, want %q", i, c.IDs, got, c.Decoded)
				}
			}
		})
	}
}

func equalIDs(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestGoldenGreedyText(t *testing.T) {
	root := repoRoot(t)
	for _, model := range []string{"tiny-llava-random", "tiny-llava-trained"} {
		dir := filepath.Join(root, "testdata", model)
		tok, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "golden.json"))
		if err != nil {
			t.Fatal(err)
		}
		var g struct {
			Prompts []struct {
				TokenizerIDs []int  `json:"tokenizer_ids_before_expansion"`
				PromptText   string `json:"prompt_text"`
				Ours         struct {
					Greedy     []int  `json:"greedy_16"`
					GreedyText string `json:"greedy_16_text"`
				} `json:"ours"`
			} `json:"prompts"`
		}
		if err := json.Unmarshal(data, &g); err != nil {
			t.Fatal(err)
		}
		for i, p := range g.Prompts {
			if got := tok.Encode(p.PromptText, true); !equalIDs(got, p.TokenizerIDs) {
				t.Errorf("%s prompt %d: got %v want %v", model, i, got, p.TokenizerIDs)
			}
			if got := tok.Decode(p.Ours.Greedy, true); got != p.Ours.GreedyText {
				t.Errorf("%s prompt %d: greedy text %q, want %q", model, i, got, p.Ours.GreedyText)
			}
		}
	}
}

// The streamed pieces must be valid UTF-8 and add up to the full decode,
// whatever way the ids are chunked.
func TestStreamDecoderMatchesDecode(t *testing.T) {
	oracle := loadOracle(t)
	dirs := oracleDirs(repoRoot(t))
	for name, set := range oracle {
		tok := loadOracleTokenizer(t, name, dirs[name])
		for _, c := range set.Cases {
			for _, chunk := range []int{1, 2, 3} {
				d := tok.NewStreamDecoder(false)
				var sb strings.Builder
				for i := 0; i < len(c.IDs); i += chunk {
					piece := d.Add(c.IDs[i:min(i+chunk, len(c.IDs))])
					if !utf8.ValidString(piece) {
						t.Fatalf("%s: invalid UTF-8 piece %q", name, piece)
					}
					sb.WriteString(piece)
				}
				sb.WriteString(d.Flush())
				if sb.String() != c.Decoded {
					t.Errorf("%s chunk %d: streamed %q, want %q", name, chunk, sb.String(), c.Decoded)
				}
			}
		}
	}
}

func TestStreamDecoderHoldsSplitCharacter(t *testing.T) {
	tok, err := Load(filepath.Join(repoRoot(t), "testdata", "tiny-llava-random"))
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode("😀", false) // the fixture vocabulary has no emoji: one id per byte
	if len(ids) < 2 {
		t.Fatalf("want the emoji split over several tokens, got %v", ids)
	}
	d := tok.NewStreamDecoder(false)
	if got := d.Add(ids[:1]); got != "" {
		t.Fatalf("first byte of a 4-byte character must be held back, got %q", got)
	}
	if got := d.Add(ids[1:]); got != "😀" {
		t.Fatalf("got %q", got)
	}
}

func TestLossyString(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte("ok"), "ok"},
		{[]byte{0xE2, 0x82, 'a'}, "\uFFFDa"},
		{[]byte{0xFF, 0xFF}, "\uFFFD\uFFFD"},
		{[]byte{0xF0, 0x9F, 0x98}, "\uFFFD"},
		{[]byte{0xED, 0xA0, 0x80}, "\uFFFD\uFFFD\uFFFD"},
	} {
		if got := lossyString(tc.in); got != tc.want {
			t.Errorf("lossyString(%x) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseRefusesUnsupported(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"wordpiece", `{"model": {"type": "WordPiece", "vocab": {}}}`, "WordPiece"},
		{"normalizer", `{"normalizer": {"type": "BertNormalizer"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}`, "BertNormalizer"},
		{"merge outside vocab", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`, "outside the vocabulary"},
		{"not json", `{`, "parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func FuzzEncodeDecode(f *testing.F) {
	tok, err := Load(filepath.Join(repoRoot(f), "testdata", "tiny-llava-random"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"Hello", "<image>\nx", "日本 😀", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s, false)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d out of range", id)
			}
		}
		// Byte-level BPE is lossless for valid UTF-8 text.
		if utf8.ValidString(s) {
			if got := tok.Decode(ids, false); got != s {
				t.Fatalf("round trip %q -> %v -> %q", s, ids, got)
			}
		}
	})
}
