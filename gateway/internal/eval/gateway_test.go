package eval

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// A fake OpenAI endpoint records what the SDK sends for each protocol and
// answers "circle" with a usage.kv_cache extension.
func TestGatewayBackend(t *testing.T) {
	var mu sync.Mutex
	type seen struct {
		ratio, policy string
		body          map[string]any
	}
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		got = append(got, seen{r.Header.Get(HeaderKeepRatio), r.Header.Get(HeaderPolicy), body})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":" circle"},"finish_reason":"stop"}],"usage":{"prompt_tokens":524,"completion_tokens":2,"total_tokens":526,"kv_cache":{"policy":"vlcache","keep_ratio":0.1,"tokens_full":8384,"tokens_kept":840,"bytes_full":2146304,"bytes_kept":215040}}}`)
	}))
	defer srv.Close()
	g := NewGateway(srv.URL+"/v1", "", "tiny")
	samples := loadFixture(t)[:1]
	cfg := Config{Protocols: []string{"P1", "P2"}, Policies: []string{"vlcache"}, KeepRatios: []float64{0.1}, MaxTokens: 5,
		Inflight: 2, SampleWorkers: 1, PlotSample: "none"}
	res, err := Run(context.Background(), g, nil, samples, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Predictions) != 2 || len(got) != 2 {
		t.Fatalf("%d predictions, %d requests", len(res.Predictions), len(got))
	}
	for _, p := range res.Predictions {
		if p.Prediction != "circle" || p.Score != 1 || p.KVBytesKept != 215040 || p.PromptTokens != 524 {
			t.Fatalf("prediction %+v", p)
		}
	}
	compress := map[string]int{}
	for _, s := range got {
		if s.ratio != "0.1" || s.policy != "vlcache" || s.body["model"] != "tiny" || s.body["max_tokens"] != float64(5) || s.body["temperature"] != float64(0) {
			t.Fatalf("request headers %q %q body %v", s.ratio, s.policy, s.body)
		}
		kv, _ := s.body["kv_cache"].(map[string]any)
		compress[fmt.Sprint(kv["compress_after"])]++
		msgs := s.body["messages"].([]any)
		parts := msgs[0].(map[string]any)["content"].([]any)
		if len(parts) != 9 || !strings.HasPrefix(parts[0].(map[string]any)["image_url"].(map[string]any)["url"].(string), "data:image/png;base64,") ||
			parts[8].(map[string]any)["text"] != samples[0].Question {
			t.Fatalf("content parts %v", parts)
		}
	}
	if compress["images"] != 1 || compress["<nil>"] != 1 {
		t.Fatalf("compress_after per request: %v (want one P2 request with images, one P1 without)", compress)
	}
}

func TestKVStatsFromUsage(t *testing.T) {
	if KVStatsFromUsage(`{"prompt_tokens":3}`) != nil || KVStatsFromUsage("") != nil {
		t.Fatal("no kv_cache must give nil")
	}
	s := KVStatsFromUsage(`{"prompt_tokens":3,"kv_cache":{"bytes_full":10,"bytes_kept":1,"tokens_full":5,"tokens_kept":2}}`)
	if s == nil || s.KVBytesFull != 10 || s.KVBytesKept != 1 || s.KVTokensKept != 2 || s.PromptTokens != 3 {
		t.Fatalf("%+v", s)
	}
}
