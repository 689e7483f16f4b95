package server

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vlcache/vlcache/gateway/internal/openai"
)

// Any text, newlines and invalid bytes included, travels as exactly one SSE
// event that parses back to the same content.
func FuzzSSERoundTrip(f *testing.F) {
	f.Add("hello")
	f.Add("line\n\ndata: [DONE]\n\n")
	f.Add("\r\n\x00\u2028")
	f.Fuzz(func(t *testing.T, text string) {
		// The stream decoder only ever emits valid UTF-8.
		text = strings.ToValidUTF8(text, "\uFFFD")
		rec := httptest.NewRecorder()
		w := &sseWriter{w: rec}
		if err := w.event(openai.ContentChunk(openai.NewChunk("id", "m", 1), text)); err != nil {
			t.Fatal(err)
		}
		events := sseEvents(t, strings.NewReader(rec.Body.String()))
		if len(events) != 1 {
			t.Fatalf("%d events for one chunk", len(events))
		}
		var ch openai.ChatCompletionChunk
		if err := json.Unmarshal([]byte(events[0]), &ch); err != nil {
			t.Fatal(err)
		}
		if got := *ch.Choices[0].Delta.Content; got != text {
			t.Fatalf("got %q want %q", got, text)
		}
	})
}
