package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// StreamDecoder turns ids into text incrementally: Add returns only complete
// UTF-8 characters, holding back the bytes of a character split across
// tokens; Flush ends the stream. The concatenation of everything returned
// equals Decode of all ids.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	pending     []byte
	toStrip     int  // leading spaces still to strip from the start of the text
	started     bool // a token has been decoded
}

func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial, toStrip: t.stripLeading}
}

func (d *StreamDecoder) Add(ids []int) string {
	for _, id := range ids {
		if d.skipSpecial && d.t.IsSpecial(id) {
			continue
		}
		if !d.started && d.t.metaspaceDropFirst && id >= 0 && id < len(d.t.idToToken) {
			if _, added := d.t.addedByID[id]; !added && !isByteToken(d.t.idToToken[id]) {
				d.pending = append(d.pending, strings.ReplaceAll(d.t.idToToken[id], string(d.t.decodeMetaspace), "")...)
				d.started = true
				continue
			}
		}
		d.pending = d.t.tokenBytes(d.pending, id)
		d.started = true
	}
	for d.toStrip > 0 && len(d.pending) > 0 {
		if d.pending[0] != ' ' {
			d.toStrip = 0
			break
		}
		d.pending = d.pending[1:]
		d.toStrip--
	}
	keep := incompleteTail(d.pending)
	out := lossyString(d.pending[:len(d.pending)-keep])
	d.pending = append(d.pending[:0], d.pending[len(d.pending)-keep:]...)
	return out
}

// Flush returns what is held back, with U+FFFD for an unfinished character.
func (d *StreamDecoder) Flush() string {
	out := lossyString(d.pending)
	d.pending = d.pending[:0]
	return out
}

// incompleteTail is the length of a trailing prefix of a UTF-8 sequence that
// later bytes could still complete.
func incompleteTail(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c&0xC0 == 0x80 {
			continue // continuation byte: look further back for the lead
		}
		need := seqLen(c)
		if need > k && validPrefix(b[len(b)-k:]) {
			return k
		}
		return 0
	}
	return 0
}

func seqLen(c byte) int {
	switch {
	case c < 0x80:
		return 1
	case c >= 0xC2 && c <= 0xDF:
		return 2
	case c >= 0xE0 && c <= 0xEF:
		return 3
	case c >= 0xF0 && c <= 0xF4:
		return 4
	}
	return 0
}

// validPrefix reports whether b (starting with a lead byte) is a valid start
// of a UTF-8 sequence, using the tighter second-byte ranges of E0, ED, F0, F4.
func validPrefix(b []byte) bool {
	if len(b) < 2 {
		return seqLen(b[0]) > 0
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch b[0] {
	case 0xE0:
		lo = 0xA0
	case 0xED:
		hi = 0x9F
	case 0xF0:
		lo = 0x90
	case 0xF4:
		hi = 0x8F
	}
	if b[1] < lo || b[1] > hi {
		return false
	}
	for _, c := range b[2:] {
		if c&0xC0 != 0x80 {
			return false
		}
	}
	return true
}

// lossyString converts bytes to a string replacing each maximal invalid
// subpart with one U+FFFD, as Python's errors="replace" and Rust's
// from_utf8_lossy do.
func lossyString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			sb.WriteRune(r)
			i += size
			continue
		}
		// Skip the longest prefix of a valid sequence starting here (at least 1 byte).
		n := 1
		if need := seqLen(b[i]); need > 1 {
			for n < need && i+n < len(b) && validPrefix(b[i:i+n+1]) {
				n++
			}
		}
		sb.WriteRune(utf8.RuneError)
		i += n
	}
	return sb.String()
}

func isByteToken(s string) bool { return len(s) == 6 && strings.HasPrefix(s, "<0x") && s[5] == '>' }
