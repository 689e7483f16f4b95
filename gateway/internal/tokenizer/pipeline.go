package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

type normalizer interface{ normalize(string) string }

type normFunc func(string) string

func (f normFunc) normalize(s string) string { return f(s) }

type stepJSON struct {
	Type          string            `json:"type"`
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`
	Prepend       string            `json:"prepend"`
	Pattern       *patternJSON      `json:"pattern"`
	Content       json.RawMessage   `json:"content"`
	Behavior      string            `json:"behavior"`
	Invert        bool              `json:"invert"`
	AddPrefix     bool              `json:"add_prefix_space"`
	UseRegex      *bool             `json:"use_regex"`
	Replacement   string            `json:"replacement"`
	PrependScheme string            `json:"prepend_scheme"`
	Split         *bool             `json:"split"`
	Start         int               `json:"start"`
	Stop          int               `json:"stop"`
	Single        []templatePiece   `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
}

type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func parseNormalizer(raw json.RawMessage) ([]normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s stepJSON
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("failed to parse normalizer: %w", err)
	}
	switch s.Type {
	case "Sequence":
		var out []normalizer
		for _, r := range s.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, err
			}
			out = append(out, n...)
		}
		return out, nil
	case "NFC":
		return []normalizer{normFunc(norm.NFC.String)}, nil
	case "NFKC":
		return []normalizer{normFunc(norm.NFKC.String)}, nil
	case "NFD":
		return []normalizer{normFunc(norm.NFD.String)}, nil
	case "NFKD":
		return []normalizer{normFunc(norm.NFKD.String)}, nil
	case "Lowercase":
		return []normalizer{normFunc(strings.ToLower)}, nil
	case "Prepend":
		p := s.Prepend
		return []normalizer{normFunc(func(x string) string {
			if x == "" {
				return x
			}
			return p + x
		})}, nil
	case "Replace":
		if s.Pattern == nil || s.Pattern.String == nil {
			return nil, fmt.Errorf("normalizer Replace: only string patterns are supported")
		}
		var content string
		if err := json.Unmarshal(s.Content, &content); err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		from := *s.Pattern.String
		return []normalizer{normFunc(func(x string) string { return strings.ReplaceAll(x, from, content) })}, nil
	}
	return nil, fmt.Errorf("normalizer %q is not supported", s.Type)
}

// preTokenizer splits a piece of text into words; atStart says the piece
// begins at offset 0 of the input (Metaspace's "first" scheme needs it).
type preTokenizer interface {
	split(dst []string, s string, atStart bool) []string
}

// gpt2Pattern is the GPT-2 pre-tokenisation regex used by ByteLevel with use_regex.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

func parsePreTokenizer(raw json.RawMessage) ([]preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s stepJSON
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("failed to parse pre_tokenizer: %w", err)
	}
	switch s.Type {
	case "Sequence":
		var out []preTokenizer
		for _, r := range s.Pretokenizers {
			p, err := parsePreTokenizer(r)
			if err != nil {
				return nil, err
			}
			out = append(out, p...)
		}
		return out, nil
	case "ByteLevel":
		bl := &byteLevelPre{addPrefix: s.AddPrefix}
		if s.UseRegex == nil || *s.UseRegex {
			re, err := compile(gpt2Pattern)
			if err != nil {
				return nil, err
			}
			bl.re = re
		}
		return []preTokenizer{bl}, nil
	case "Split":
		if s.Pattern == nil {
			return nil, fmt.Errorf("pre_tokenizer Split without a pattern")
		}
		var re *regexp2.Regexp
		var err error
		switch {
		case s.Pattern.Regex != nil:
			re, err = compile(*s.Pattern.Regex)
		case s.Pattern.String != nil:
			re, err = compile(regexp2.Escape(*s.Pattern.String))
		}
		if err != nil {
			return nil, err
		}
		if s.Invert {
			return nil, fmt.Errorf("pre_tokenizer Split with invert is not supported")
		}
		switch s.Behavior {
		case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext":
		default:
			return nil, fmt.Errorf("pre_tokenizer Split behavior %q is not supported", s.Behavior)
		}
		return []preTokenizer{&splitPre{re: re, behavior: s.Behavior}}, nil
	case "Metaspace":
		rep := []rune(s.Replacement)
		if len(rep) != 1 {
			return nil, fmt.Errorf("pre_tokenizer Metaspace replacement %q must be one character", s.Replacement)
		}
		scheme := s.PrependScheme
		if scheme == "" {
			scheme = "always"
			if !s.AddPrefix {
				scheme = "never"
			}
		}
		return []preTokenizer{&metaspacePre{rep: rep[0], scheme: scheme, splitWords: s.Split == nil || *s.Split}}, nil
	}
	return nil, fmt.Errorf("pre_tokenizer %q is not supported", s.Type)
}

func compile(pattern string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(pattern, regexp2.Unicode)
	if err != nil {
		return nil, fmt.Errorf("failed to compile pre-tokenizer regex %q: %w", pattern, err)
	}
	return re, nil
}

// matches returns the [start, end) rune offsets of every match of re in s.
func matches(re *regexp2.Regexp, runes []rune) [][2]int {
	var out [][2]int
	m, _ := re.FindRunesMatch(runes)
	for m != nil {
		if m.Length > 0 {
			out = append(out, [2]int{m.Index, m.Index + m.Length})
		}
		m, _ = re.FindNextMatch(m)
	}
	return out
}

type splitPre struct {
	re       *regexp2.Regexp
	behavior string
}

func (p *splitPre) split(dst []string, s string, _ bool) []string {
	runes := []rune(s)
	prev := 0
	pendingMerge := "" // MergedWithNext: a delimiter waiting for the next piece
	emit := func(x string) {
		if x != "" {
			dst = append(dst, x)
		}
	}
	for _, m := range matches(p.re, runes) {
		gap, match := string(runes[prev:m[0]]), string(runes[m[0]:m[1]])
		switch p.behavior {
		case "Isolated":
			emit(gap)
			emit(match)
		case "Removed":
			emit(gap)
		case "MergedWithPrevious":
			emit(gap + match)
		case "MergedWithNext":
			emit(pendingMerge + gap)
			pendingMerge = match
		}
		prev = m[1]
	}
	emit(pendingMerge + string(runes[prev:]))
	return dst
}

type byteLevelPre struct {
	addPrefix bool
	re        *regexp2.Regexp
}

func (p *byteLevelPre) split(dst []string, s string, _ bool) []string {
	if p.addPrefix && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	var words []string
	if p.re == nil {
		words = []string{s}
	} else {
		runes := []rune(s)
		for _, m := range matches(p.re, runes) {
			words = append(words, string(runes[m[0]:m[1]]))
		}
	}
	for _, w := range words {
		dst = append(dst, byteLevelEncode(w))
	}
	return dst
}

type metaspacePre struct {
	rep        rune
	scheme     string // always, first, never
	splitWords bool
}

func (p *metaspacePre) split(dst []string, s string, atStart bool) []string {
	r := string(p.rep)
	s = strings.ReplaceAll(s, " ", r)
	if !strings.HasPrefix(s, r) && (p.scheme == "always" || (p.scheme == "first" && atStart)) {
		s = r + s
	}
	if !p.splitWords {
		return append(dst, s)
	}
	// Split so that each replacement character starts a new word.
	start := 0
	for i, c := range s {
		if c == p.rep && i > start {
			dst = append(dst, s[start:i])
			start = i
		}
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}

type templatePiece struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

// postProcessor adds special tokens around an encoded single sequence.
type postProcessor interface{ apply(ids []int) []int }

type templatePost struct{ before, after []int }

func (p *templatePost) apply(ids []int) []int {
	out := make([]int, 0, len(p.before)+len(ids)+len(p.after))
	out = append(out, p.before...)
	out = append(out, ids...)
	return append(out, p.after...)
}

func parsePostProcessor(raw json.RawMessage, t *Tokenizer) (postProcessor, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s stepJSON
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("failed to parse post_processor: %w", err)
	}
	switch s.Type {
	case "ByteLevel":
		return nil, nil // only adjusts offsets
	case "Sequence":
		combined := &templatePost{}
		for _, r := range s.Processors {
			p, err := parsePostProcessor(r, t)
			if err != nil {
				return nil, err
			}
			if tp, ok := p.(*templatePost); ok {
				combined.before = append(combined.before, tp.before...)
				combined.after = append(combined.after, tp.after...)
			}
		}
		return combined, nil
	case "TemplateProcessing":
		tp := &templatePost{}
		seen := false
		for _, piece := range s.Single {
			switch {
			case piece.Sequence != nil:
				seen = true
			case piece.SpecialToken != nil:
				st, ok := s.SpecialTokens[piece.SpecialToken.ID]
				if !ok {
					return nil, fmt.Errorf("post_processor names special token %q without ids", piece.SpecialToken.ID)
				}
				if seen {
					tp.after = append(tp.after, st.IDs...)
				} else {
					tp.before = append(tp.before, st.IDs...)
				}
			}
		}
		return tp, nil
	}
	return nil, fmt.Errorf("post_processor %q is not supported", s.Type)
}

func (t *Tokenizer) parseDecoder(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var s stepJSON
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("failed to parse decoder: %w", err)
	}
	switch s.Type {
	case "Sequence":
		for _, r := range s.Decoders {
			if err := t.parseDecoder(r); err != nil {
				return err
			}
		}
		return nil
	case "ByteLevel":
		if !t.byteLevel {
			return fmt.Errorf("a ByteLevel decoder needs a ByteLevel pre_tokenizer")
		}
		return nil
	case "ByteFallback", "Fuse":
		return nil
	case "Replace":
		var content string
		if s.Pattern == nil || s.Pattern.String == nil || json.Unmarshal(s.Content, &content) != nil ||
			content != " " || len([]rune(*s.Pattern.String)) != 1 {
			return fmt.Errorf("decoder Replace: only replacing one character by a space is supported")
		}
		t.decodeMetaspace = []rune(*s.Pattern.String)[0]
		return nil
	case "Strip":
		var content string
		if json.Unmarshal(s.Content, &content) != nil || content != " " || s.Stop != 0 {
			return fmt.Errorf("decoder Strip: only stripping leading spaces is supported")
		}
		t.stripLeading = s.Start
		return nil
	case "Metaspace":
		rep := []rune(s.Replacement)
		if len(rep) != 1 {
			return fmt.Errorf("decoder Metaspace replacement %q must be one character", s.Replacement)
		}
		t.decodeMetaspace = rep[0]
		if s.PrependScheme != "never" && (s.PrependScheme != "" || s.AddPrefix) {
			t.metaspaceDropFirst = true
		}
		return nil
	}
	return fmt.Errorf("decoder %q is not supported", s.Type)
}
