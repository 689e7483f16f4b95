package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedMatcher finds added tokens in raw text, leftmost then longest, as
// Hugging Face's added vocabulary does.
type addedMatcher struct {
	tokens []AddedToken // longest content first
}

type segment struct {
	text  string
	id    int // -1 for ordinary text
	start int // byte offset in the input
}

func newAddedMatcher(added []AddedToken) *addedMatcher {
	m := &addedMatcher{}
	for _, a := range added {
		if a.Content != "" {
			m.tokens = append(m.tokens, a)
		}
	}
	sort.SliceStable(m.tokens, func(i, j int) bool { return len(m.tokens[i].Content) > len(m.tokens[j].Content) })
	return m
}

func isWordChar(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func (m *addedMatcher) split(text string) []segment {
	var out []segment
	plainStart := 0
	i := 0
	for i < len(text) {
		tok, ok := m.matchAt(text, i)
		if !ok {
			_, size := utf8.DecodeRuneInString(text[i:])
			i += size
			continue
		}
		start, end := i, i+len(tok.Content)
		if tok.LStrip {
			for start > plainStart {
				r, size := utf8.DecodeLastRuneInString(text[plainStart:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= size
			}
		}
		if tok.RStrip {
			for end < len(text) {
				r, size := utf8.DecodeRuneInString(text[end:])
				if !unicode.IsSpace(r) {
					break
				}
				end += size
			}
		}
		if start > plainStart {
			out = append(out, segment{text: text[plainStart:start], id: -1, start: plainStart})
		}
		out = append(out, segment{text: text[start:end], id: tok.ID, start: start})
		plainStart, i = end, end
	}
	if plainStart < len(text) || len(out) == 0 {
		out = append(out, segment{text: text[plainStart:], id: -1, start: plainStart})
	}
	return out
}

func (m *addedMatcher) matchAt(text string, i int) (AddedToken, bool) {
	for _, tok := range m.tokens {
		if !strings.HasPrefix(text[i:], tok.Content) {
			continue
		}
		if tok.SingleWord {
			if r, _ := utf8.DecodeLastRuneInString(text[:i]); i > 0 && isWordChar(r) {
				continue
			}
			if r, _ := utf8.DecodeRuneInString(text[i+len(tok.Content):]); i+len(tok.Content) < len(text) && isWordChar(r) {
				continue
			}
		}
		return tok, true
	}
	return AddedToken{}, false
}
