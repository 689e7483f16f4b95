// Package tokenizer encodes and decodes text with a Hugging Face tokenizer.json:
// byte-level BPE (GPT-2, Llama-3, Qwen2 style) and SentencePiece-style BPE with
// byte fallback (Llama-2, Mistral style). Only the pieces those families use are
// implemented; anything else is refused at Load so a model never runs with a
// silently different tokenisation.
package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Tokenizer is immutable after Load and safe for concurrent use.
type Tokenizer struct {
	vocab        map[string]int
	idToToken    []string
	merges       map[[2]int]merge
	unkID        int // -1 when the model has no unk token
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	byteIDs      [256]int // <0xNN> ids for byte fallback, -1 when absent

	added      []AddedToken
	addedByID  map[int]*AddedToken
	addedMatch *addedMatcher

	normalizers []normalizer
	pre         []preTokenizer
	byteLevel   bool // words are byte-level mapped before BPE, and decoded back

	post postProcessor

	// decoding
	decodeMetaspace rune // replaced by a space on decode (0: none)
	stripLeading    int  // leading spaces removed from the start of decoded text
	// The Metaspace decoder drops every replacement character of the first
	// token instead of turning it into a space.
	metaspaceDropFirst bool

	BOS, EOS     string // from tokenizer_config.json, "" when unset
	BOSID, EOSID int    // -1 when unset
}

type merge struct {
	rank int
	id   int
}

// AddedToken is one entry of tokenizer.json's added_tokens.
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type fileJSON struct {
	AddedTokens   []AddedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         modelJSON       `json:"model"`
}

type modelJSON struct {
	Type                    string          `json:"type"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Dropout                 *float64        `json:"dropout"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
}

// Load reads tokenizer.json and, when present, tokenizer_config.json from a
// model directory.
func Load(modelDir string) (*Tokenizer, error) {
	data, err := os.ReadFile(filepath.Join(modelDir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("failed to read tokenizer: %w", err)
	}
	tok, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("failed to load %s: %w", filepath.Join(modelDir, "tokenizer.json"), err)
	}
	cfgData, err := os.ReadFile(filepath.Join(modelDir, "tokenizer_config.json"))
	if err == nil {
		var cfg Config
		if err := json.Unmarshal(cfgData, &cfg); err != nil {
			return nil, fmt.Errorf("failed to parse tokenizer_config.json: %w", err)
		}
		tok.BOS, tok.EOS = cfg.BOSToken.Content, cfg.EOSToken.Content
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to read tokenizer_config.json: %w", err)
	}
	tok.BOSID, tok.EOSID = tok.lookup(tok.BOS), tok.lookup(tok.EOS)
	return tok, nil
}

func (t *Tokenizer) lookup(s string) int {
	if s == "" {
		return -1
	}
	if id, ok := t.TokenID(s); ok {
		return id
	}
	return -1
}

// Config is the part of tokenizer_config.json the gateway reads.
type Config struct {
	BOSToken     SpecialToken `json:"bos_token"`
	EOSToken     SpecialToken `json:"eos_token"`
	ChatTemplate ChatTemplate `json:"chat_template"`
}

// SpecialToken accepts both a plain string and an AddedToken-shaped object.
type SpecialToken struct{ Content string }

func (s *SpecialToken) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &s.Content)
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	s.Content = obj.Content
	return nil
}

// ChatTemplate accepts a string or a list of {name, template}; the one named
// "default" (or the first) is used.
type ChatTemplate string

func (c *ChatTemplate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, (*string)(c))
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	for i, e := range list {
		if e.Name == "default" || i == 0 {
			*c = ChatTemplate(e.Template)
		}
	}
	return nil
}

// Parse builds a tokenizer from the contents of a tokenizer.json.
func Parse(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("failed to parse tokenizer.json: %w", err)
	}
	m := f.Model
	if m.Type != "" && m.Type != "BPE" {
		return nil, fmt.Errorf("model type %q is not supported (only BPE)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return nil, errors.New("BPE dropout is not supported")
	}
	if (m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "") ||
		(m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "") {
		return nil, errors.New("continuing_subword_prefix / end_of_word_suffix are not supported")
	}
	t := &Tokenizer{
		vocab:        m.Vocab,
		merges:       map[[2]int]merge{},
		unkID:        -1,
		fuseUnk:      m.FuseUnk,
		byteFallback: m.ByteFallback,
		ignoreMerges: m.IgnoreMerges,
		addedByID:    map[int]*AddedToken{},
		BOSID:        -1,
		EOSID:        -1,
	}
	if t.vocab == nil {
		t.vocab = map[string]int{}
	}
	maxID := -1
	for _, id := range t.vocab {
		maxID = max(maxID, id)
	}
	for _, a := range f.AddedTokens {
		maxID = max(maxID, a.ID)
	}
	t.idToToken = make([]string, maxID+1)
	for s, id := range t.vocab {
		if id < 0 {
			return nil, fmt.Errorf("negative id %d in vocab", id)
		}
		t.idToToken[id] = s
	}
	t.added = f.AddedTokens
	for i := range t.added {
		a := &t.added[i]
		if a.ID < 0 {
			return nil, fmt.Errorf("negative id %d in added_tokens", a.ID)
		}
		t.idToToken[a.ID] = a.Content
		t.addedByID[a.ID] = a
	}
	t.addedMatch = newAddedMatcher(t.added)
	if m.UnkToken != nil {
		id, ok := t.vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", *m.UnkToken)
		}
		t.unkID = id
	}
	for b := 0; b < 256; b++ {
		t.byteIDs[b] = -1
		if id, ok := t.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteIDs[b] = id
		}
	}
	pairs, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	for rank, p := range pairs {
		a, okA := t.vocab[p[0]]
		b, okB := t.vocab[p[1]]
		c, okC := t.vocab[p[0]+p[1]]
		if !okA || !okB || !okC {
			return nil, fmt.Errorf("merge %d (%q %q) uses tokens outside the vocabulary", rank, p[0], p[1])
		}
		if _, dup := t.merges[[2]int{a, b}]; !dup {
			t.merges[[2]int{a, b}] = merge{rank: rank, id: c}
		}
	}
	if t.normalizers, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	for _, p := range t.pre {
		if _, ok := p.(*byteLevelPre); ok {
			t.byteLevel = true
		}
	}
	if t.post, err = parsePostProcessor(f.PostProcessor, t); err != nil {
		return nil, err
	}
	if err := t.parseDecoder(f.Decoder); err != nil {
		return nil, err
	}
	return t, nil
}

func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	// Older files store "a b" strings, newer ones ["a", "b"] pairs.
	var asStrings []string
	if err := json.Unmarshal(raw, &asStrings); err == nil {
		out := make([][2]string, len(asStrings))
		for i, s := range asStrings {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("merge %d %q has no space", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var asPairs [][2]string
	if err := json.Unmarshal(raw, &asPairs); err != nil {
		return nil, fmt.Errorf("failed to parse merges: %w", err)
	}
	return asPairs, nil
}

// VocabSize is one past the highest token id.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// TokenID returns the id of a token string (an added token or a vocabulary entry).
func (t *Tokenizer) TokenID(s string) (int, bool) {
	for _, a := range t.added {
		if a.Content == s {
			return a.ID, true
		}
	}
	id, ok := t.vocab[s]
	return id, ok
}

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.Special
}

// Encode tokenises text; addSpecial applies the post-processor (BOS for
// Llama-family tokenizers). Added tokens written in the text (such as
// "<image>" or "<s>") are matched as tokens, as Hugging Face does.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	var ids []int
	for _, seg := range t.addedMatch.split(text) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		ids = t.encodeSegment(ids, seg.text, seg.start == 0)
	}
	if addSpecial && t.post != nil {
		ids = t.post.apply(ids)
	}
	return ids
}

func (t *Tokenizer) encodeSegment(ids []int, text string, atStart bool) []int {
	if text == "" {
		return ids
	}
	for _, n := range t.normalizers {
		text = n.normalize(text)
	}
	words := []string{text}
	for _, p := range t.pre {
		var next []string
		for _, w := range words {
			next = p.split(next, w, atStart)
		}
		words = next
	}
	for _, w := range words {
		ids = t.bpe(ids, w)
	}
	return ids
}

// Decode turns ids back into text; invalid UTF-8 becomes U+FFFD.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	d := t.NewStreamDecoder(skipSpecial)
	return d.Add(ids) + d.Flush()
}

// tokenBytes is what one token contributes to the decoded byte stream.
func (t *Tokenizer) tokenBytes(dst []byte, id int) []byte {
	if id < 0 || id >= len(t.idToToken) {
		return dst
	}
	s := t.idToToken[id]
	if _, added := t.addedByID[id]; added && !t.byteLevel {
		return append(dst, t.replaceMeta(s)...)
	}
	if t.byteLevel {
		start := len(dst)
		for _, r := range s {
			b, ok := unicodeToByte[r]
			if !ok {
				// As Hugging Face does: a token with a character outside the
				// byte map is taken verbatim.
				return append(dst[:start], s...)
			}
			dst = append(dst, b)
		}
		return dst
	}
	if t.byteFallback && len(s) == 6 && strings.HasPrefix(s, "<0x") && s[5] == '>' {
		var b byte
		if _, err := fmt.Sscanf(s, "<0x%02X>", &b); err == nil {
			return append(dst, b)
		}
	}
	return append(dst, t.replaceMeta(s)...)
}

func (t *Tokenizer) replaceMeta(s string) string {
	if t.decodeMetaspace == 0 {
		return s
	}
	return strings.ReplaceAll(s, string(t.decodeMetaspace), " ")
}
