package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/openai"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

func modelDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "tiny-llava-random")
}

// fakeGen stands in for tritonserver in these handler tests only.
type fakeGen struct {
	mu       sync.Mutex
	chunks   []triton.Chunk
	err      error // returned after the chunks
	got      []triton.Request
	blockCtx bool // wait for cancellation after the first chunk
	ctxDone  chan struct{}
}

func (f *fakeGen) Generate(ctx context.Context, req triton.Request, fn func(triton.Chunk) error) error {
	f.mu.Lock()
	f.got = append(f.got, req)
	f.mu.Unlock()
	for i, ch := range f.chunks {
		if err := fn(ch); err != nil {
			return err
		}
		if f.blockCtx && i == 0 {
			<-ctx.Done()
			close(f.ctxDone)
			return ctx.Err()
		}
	}
	return f.err
}

func (f *fakeGen) Ready(context.Context, ...string) error { return nil }

// recordingAdmitter checks that Finish is called exactly once per grant.
type recordingAdmitter struct {
	admission.Open
	mu       sync.Mutex
	finishes []admission.Usage
}

type recordingGrant struct {
	admission.Grant
	a *recordingAdmitter
}

func (g *recordingGrant) Finish(ctx context.Context, u admission.Usage) {
	g.a.mu.Lock()
	g.a.finishes = append(g.a.finishes, u)
	g.a.mu.Unlock()
}

func (a *recordingAdmitter) Admit(ctx context.Context, req admission.Request) (admission.Grant, error) {
	g, err := a.Open.Admit(ctx, req)
	if err != nil {
		return nil, err
	}
	return &recordingGrant{Grant: g, a: a}, nil
}

type golden struct {
	Prompts []struct {
		Question string `json:"question"`
		InputIDs []int  `json:"input_ids"`
		Images   []string
		Ours     struct {
			Greedy []int `json:"greedy_16"`
		} `json:"ours"`
	} `json:"prompts"`
}

func loadGolden(t *testing.T) golden {
	b, err := os.ReadFile(filepath.Join(modelDir(), "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func dataURL(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join(modelDir(), "golden_images", name))
	if err != nil {
		t.Fatal(err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

func greedyChunks(ids []int) []triton.Chunk {
	var out []triton.Chunk
	for i := 0; i < len(ids); i += 5 {
		var part []int32
		for _, id := range ids[i:min(i+5, len(ids))] {
			part = append(part, int32(id))
		}
		out = append(out, triton.Chunk{OutputIDs: part})
	}
	out = append(out, triton.Chunk{Final: true, FinishReason: "length", Stats: &triton.Stats{
		PromptTokens: 77, ImageTokens: 64, CompletionTokens: len(ids), Policy: "vlcache", KeepRatio: 0.1,
		KVTokensFull: 77 * 16, KVTokensKept: 8 * 16, KVBytesFull: 77 * 16 * 128, KVBytesKept: 8 * 16 * 128}})
	return out
}

func newTestServer(t *testing.T, gen Generator, adm admission.Admitter) *Server {
	t.Helper()
	cm, err := chat.Load(modelDir())
	if err != nil {
		t.Fatal(err)
	}
	proc, err := images.LoadProcessor(modelDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{
		Models:    []*Model{{Name: "tiny-llava", TritonModel: "tiny_llava", Chat: cm, Images: proc}},
		Generator: gen, Admitter: adm,
		Images: images.NewLoader(images.FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1 << 20}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openAdmitter() *recordingAdmitter {
	return &recordingAdmitter{Open: admission.Open{Default: admission.KVSetting{KeepRatio: 1, Policy: "vlcache"},
		Policies: []string{"full", "vlcache", "snapkv"}}}
}

func imageRequest(t *testing.T, stream bool, extra string) string {
	g := loadGolden(t)
	return `{"model": "tiny-llava", "stream": ` + map[bool]string{true: "true", false: "false"}[stream] + extra + `,
	  "max_tokens": 16, "temperature": 0,
	  "messages": [{"role": "user", "content": [
	    {"type": "image_url", "image_url": {"url": "` + dataURL(t, "p0_f0.png") + `"}},
	    {"type": "text", "text": "` + g.Prompts[0].Question + `"}]}]}`
}

func do(s *Server, body string, headers map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func TestNonStreamingGoldenChat(t *testing.T) {
	g := loadGolden(t)
	gen := &fakeGen{chunks: greedyChunks(g.Prompts[0].Ours.Greedy)}
	adm := openAdmitter()
	s := newTestServer(t, gen, adm)
	rec := do(s, imageRequest(t, false, ""), map[string]string{"X-KV-Cache-Ratio": "0.1", "X-Request-Id": "abc-123"})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("X-Request-Id") != "abc-123" || rec.Header().Get("X-KV-Cache-Ratio") != "0.1" ||
		rec.Header().Get("X-KV-Cache-Policy") != "vlcache" {
		t.Fatalf("headers %v", rec.Header())
	}
	var resp openai.ChatCompletion
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	cm, _ := chat.Load(modelDir())
	want := cm.Tok.Decode(g.Prompts[0].Ours.Greedy, true)
	if resp.Choices[0].Message.Content != want || resp.Choices[0].FinishReason != "length" || !strings.HasPrefix(resp.ID, "chatcmpl-") {
		t.Fatalf("response %+v, want text %q", resp, want)
	}
	u := resp.Usage
	if u.PromptTokens != 77 || u.PromptTokensDetails.ImageTokens != 64 || u.CompletionTokens != 16 || u.TotalTokens != 93 ||
		u.KVCache.KeepRatio != 0.1 || u.KVCache.TokensKept != 128 || u.KVCache.Policy != "vlcache" {
		t.Fatalf("usage %+v kv %+v", u, u.KVCache)
	}
	sent := gen.got[0]
	if len(sent.InputIDs) != len(g.Prompts[0].InputIDs) || sent.KeepRatio != 0.1 || sent.Policy != "vlcache" ||
		len(sent.Images) != 1 || sent.Images[0].Height != 112 || sent.MaxTokens != 16 || sent.CompressAfter != 0 {
		t.Fatalf("backend request %+v", sent)
	}
	for i, id := range g.Prompts[0].InputIDs {
		if int(sent.InputIDs[i]) != id {
			t.Fatalf("input_ids[%d] = %d, want %d", i, sent.InputIDs[i], id)
		}
	}
	if len(adm.finishes) != 1 || adm.finishes[0].Status != 200 || adm.finishes[0].KVTokensKept != 128 || adm.finishes[0].PromptTokens != 77 {
		t.Fatalf("finishes %+v", adm.finishes)
	}
}

// sseEvents parses an SSE body into its data payloads.
func sseEvents(t *testing.T, body io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		out = append(out, data)
	}
	return out
}

func TestStreamingGoldenChat(t *testing.T) {
	g := loadGolden(t)
	gen := &fakeGen{chunks: greedyChunks(g.Prompts[0].Ours.Greedy)}
	adm := openAdmitter()
	s := newTestServer(t, gen, adm)
	rec := do(s, imageRequest(t, true, `, "stream_options": {"include_usage": true}, "kv_cache": {"keep_ratio": 0.5, "policy": "snapkv", "compress_after": "images"}`), nil)
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d type %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	events := sseEvents(t, rec.Body)
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("last event %q", events[len(events)-1])
	}
	var chunks []openai.ChatCompletionChunk
	for _, e := range events[:len(events)-1] {
		var ch openai.ChatCompletionChunk
		if err := json.Unmarshal([]byte(e), &ch); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, ch)
	}
	if chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Fatalf("first chunk %+v", chunks[0])
	}
	var text strings.Builder
	for _, ch := range chunks[1 : len(chunks)-2] {
		text.WriteString(*ch.Choices[0].Delta.Content)
	}
	cm, _ := chat.Load(modelDir())
	if want := cm.Tok.Decode(g.Prompts[0].Ours.Greedy, true); text.String() != want {
		t.Fatalf("streamed %q, want %q", text.String(), want)
	}
	finish := chunks[len(chunks)-2]
	if *finish.Choices[0].FinishReason != "length" {
		t.Fatalf("finish chunk %+v", finish)
	}
	usage := chunks[len(chunks)-1]
	if len(usage.Choices) != 0 || usage.Usage == nil || usage.Usage.CompletionTokens != 16 {
		t.Fatalf("usage chunk %+v", usage)
	}
	sent := gen.got[0]
	if sent.Policy != "snapkv" || sent.KeepRatio != 0.5 || sent.CompressAfter != 68 {
		t.Fatalf("backend request policy %q ratio %v compress_after %d", sent.Policy, sent.KeepRatio, sent.CompressAfter)
	}
	if rec.Header().Get("X-KV-Cache-Policy") != "snapkv" || len(adm.finishes) != 1 {
		t.Fatalf("headers %v finishes %d", rec.Header(), len(adm.finishes))
	}
}

func TestStopStringAcrossTokens(t *testing.T) {
	cm, err := chat.Load(modelDir())
	if err != nil {
		t.Fatal(err)
	}
	ids := cm.Tok.Encode("the cat sat on the mat", false)
	var chunks []triton.Chunk
	for _, id := range ids {
		chunks = append(chunks, triton.Chunk{OutputIDs: []int32{int32(id)}})
	}
	// As the backend sends them: the first response has the stats as known
	// after compression; the final one, never reached here, the complete ones.
	chunks[0].Stats = &triton.Stats{PromptTokens: 10, Policy: "vlcache", KVTokensFull: 160, KVTokensKept: 16,
		KVBytesFull: 160 * 128, KVBytesKept: 16 * 128}
	chunks = append(chunks, triton.Chunk{Final: true, FinishReason: "length", Stats: &triton.Stats{KVTokensFull: 1, KVTokensKept: 1}})
	for _, stream := range []bool{false, true} {
		s := newTestServer(t, &fakeGen{chunks: chunks}, openAdmitter())
		body := `{"model": "tiny-llava", "messages": [{"role": "user", "content": "hi"}], "stop": ["t on"], "stream": ` +
			map[bool]string{true: "true", false: "false"}[stream] + `}`
		rec := do(s, body, nil)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if stream {
			var text strings.Builder
			var reason string
			for _, e := range sseEvents(t, rec.Body) {
				var ch openai.ChatCompletionChunk
				if e == "[DONE]" || json.Unmarshal([]byte(e), &ch) != nil || len(ch.Choices) == 0 {
					continue
				}
				if c := ch.Choices[0].Delta.Content; c != nil {
					text.WriteString(*c)
				}
				if r := ch.Choices[0].FinishReason; r != nil {
					reason = *r
				}
			}
			if text.String() != "the cat sa" || reason != "stop" {
				t.Fatalf("stream: %q %q", text.String(), reason)
			}
		} else {
			var resp openai.ChatCompletion
			_ = json.Unmarshal(rec.Body.Bytes(), &resp)
			if resp.Choices[0].Message.Content != "the cat sa" || resp.Choices[0].FinishReason != "stop" {
				t.Fatalf("got %+v", resp.Choices[0])
			}
			if resp.Usage == nil || resp.Usage.KVCache == nil {
				t.Fatalf("no usage.kv_cache after a stop-string stop: %s", rec.Body)
			}
			if kv := resp.Usage.KVCache; kv.TokensFull != 160 || kv.TokensKept != 16 || kv.BytesKept != 16*128 {
				t.Fatalf("usage.kv_cache after a stop-string stop: %+v", kv)
			}
		}
	}
}

func TestBadRequests(t *testing.T) {
	img := dataURL(t, "p0_f0.png")
	for _, tc := range []struct {
		name    string
		body    string
		headers map[string]string
		status  int
		param   string
	}{
		{"not json", `{`, nil, 400, ""},
		{"tools", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}`, nil, 400, "tools"},
		{"unknown field", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}], "foo": 1}`, nil, 400, "foo"},
		{"n=2", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}], "n": 2}`, nil, 400, "n"},
		{"unknown model", `{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}`, nil, 404, "model"},
		{"bad header ratio", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}]}`, map[string]string{"X-KV-Cache-Ratio": "abc"}, 400, "X-KV-Cache-Ratio"},
		{"ratio out of range", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}]}`, map[string]string{"X-KV-Cache-Ratio": "1.5"}, 400, "X-KV-Cache-Ratio"},
		{"unknown policy", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}], "kv_cache": {"policy": "magic"}}`, nil, 400, "kv_cache.policy"},
		{"bad image", `{"model": "tiny-llava", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}`, nil, 400, "messages[0].content[1]"},
		{"ftp image", `{"model": "tiny-llava", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}`, nil, 400, "messages[0].content[0]"},
		{"placeholder typed", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "<image> hi"}]}`, nil, 400, "messages"},
		{"context too long", `{"model": "tiny-llava", "max_tokens": 5000, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "` + img + `"}}]}]}`, nil, 400, "max_tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := openAdmitter()
			gen := &fakeGen{chunks: greedyChunks([]int{5})}
			s := newTestServer(t, gen, adm)
			rec := do(s, tc.body, tc.headers)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			var body openai.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Message == "" || body.Error.Type == "" {
				t.Fatalf("not an OpenAI error: %s", rec.Body)
			}
			if tc.param != "" && (body.Error.Param == nil || *body.Error.Param != tc.param) {
				t.Fatalf("param %v, want %q (%s)", body.Error.Param, tc.param, body.Error.Message)
			}
			if rec.Header().Get("X-Request-Id") == "" {
				t.Fatal("x-request-id missing")
			}
			if len(gen.got) != 0 {
				t.Fatal("a bad request reached the backend")
			}
			if len(adm.finishes) > 1 {
				t.Fatalf("Finish called %d times", len(adm.finishes))
			}
		})
	}
}

func TestBackendErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gen    *fakeGen
		stream bool
		status int
		inBody string
	}{
		{"refused before output", &fakeGen{err: &triton.BackendError{Message: "kv_keep_ratio must be in (0, 1]"}}, false, 400, "kv_keep_ratio"},
		{"unavailable", &fakeGen{err: errors.New("boom")}, false, 500, "boom"},
		{"engine failed the sequence", &fakeGen{chunks: []triton.Chunk{{OutputIDs: []int32{40}}, {Final: true, FinishReason: "error", Stats: &triton.Stats{Error: "pool exhausted"}}}}, false, 500, "pool exhausted"},
		{"mid-stream", &fakeGen{chunks: []triton.Chunk{{OutputIDs: []int32{40}}}, err: &triton.BackendError{Message: "decoder exploded"}}, true, 200, `"error"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := openAdmitter()
			s := newTestServer(t, tc.gen, adm)
			body := `{"model": "tiny-llava", "messages": [{"role": "user", "content": "x"}], "stream": ` + map[bool]string{true: "true", false: "false"}[tc.stream] + `}`
			rec := do(s, body, nil)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.inBody) {
				t.Fatalf("status %d body %s", rec.Code, rec.Body)
			}
			if tc.stream {
				events := sseEvents(t, rec.Body)
				last := events[len(events)-1]
				var eb openai.ErrorBody
				if json.Unmarshal([]byte(last), &eb) != nil || eb.Error.Message == "" {
					t.Fatalf("last event %q is not an error", last)
				}
			}
			if len(adm.finishes) != 1 || adm.finishes[0].Status != tc.status {
				t.Fatalf("finishes %+v", adm.finishes)
			}
		})
	}
}

func TestClientHangUpCancelsGeneration(t *testing.T) {
	gen := &fakeGen{chunks: []triton.Chunk{{OutputIDs: []int32{40}}, {OutputIDs: []int32{41}}}, blockCtx: true, ctxDone: make(chan struct{})}
	adm := openAdmitter()
	s := newTestServer(t, gen, adm)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(`{"model": "tiny-llava", "stream": true, "messages": [{"role": "user", "content": "x"}]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q %v", line, err)
	}
	cancel() // hang up mid-stream
	resp.Body.Close()
	<-gen.ctxDone // the generator saw its context cancelled
	ts.Close()    // waits for the handler to return
	if len(adm.finishes) != 1 {
		t.Fatalf("finishes %+v", adm.finishes)
	}
}

func TestModelsHealthAndRequestID(t *testing.T) {
	s := newTestServer(t, &fakeGen{}, openAdmitter())
	for _, tc := range []struct{ path, want string }{
		{"/v1/models", `"id":"tiny-llava"`}, {"/healthz", "ok"}, {"/readyz", "ready"}, {"/v1/models/tiny-llava", `"object":"model"`},
	} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), tc.want) || rec.Header().Get("X-Request-Id") == "" {
			t.Fatalf("%s: %d %s", tc.path, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/nope", nil)
	req.Header.Set("X-Request-Id", "bad id with spaces")
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 404 || strings.Contains(rec.Header().Get("X-Request-Id"), " ") || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Fatalf("404: %d %q %s", rec.Code, rec.Header().Get("X-Request-Id"), rec.Body)
	}
}
