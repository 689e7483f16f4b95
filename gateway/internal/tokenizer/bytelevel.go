package tokenizer

import "strings"

// byteToUnicode is GPT-2's reversible map from bytes to printable characters,
// so that every byte sequence has a whitespace-free string form.
var byteToUnicode [256]rune
var unicodeToByte = map[rune]byte{}

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToUnicode[b] = rune(b)
		} else {
			byteToUnicode[b] = rune(256 + n)
			n++
		}
		unicodeToByte[byteToUnicode[b]] = byte(b)
	}
}

func byteLevelEncode(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		sb.WriteRune(byteToUnicode[s[i]])
	}
	return sb.String()
}
