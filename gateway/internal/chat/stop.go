package chat

import "strings"

// StopMatcher finds stop strings in streamed text, including ones that span
// several deltas: text that could still be the start of a stop string is held
// back until it is decided.
type StopMatcher struct {
	stops []string
	held  string
}

func NewStopMatcher(stops []string) *StopMatcher {
	var s []string
	for _, x := range stops {
		if x != "" {
			s = append(s, x)
		}
	}
	return &StopMatcher{stops: s}
}

// Push adds a delta and returns the text that may be sent. When a stop string
// is found, stopped is true and emit ends just before it.
func (m *StopMatcher) Push(delta string) (emit string, stopped bool) {
	buf := m.held + delta
	first := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		m.held = ""
		return buf[:first], true
	}
	keep := 0
	for _, s := range m.stops {
		for l := min(len(s)-1, len(buf)); l > keep; l-- {
			if strings.HasSuffix(buf, s[:l]) {
				keep = l
				break
			}
		}
	}
	m.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// Flush returns the held-back text once the stream has ended without a stop.
func (m *StopMatcher) Flush() string {
	out := m.held
	m.held = ""
	return out
}
