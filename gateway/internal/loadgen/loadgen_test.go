package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/eval"
	"github.com/vlcache/vlcache/gateway/internal/images"
)

func TestPercentile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {95, 10}, {99, 10}, {10, 1}, {11, 2}} {
		if got := Percentile(v, c.p); got != c.want {
			t.Errorf("p%g = %g, want %g", c.p, got, c.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("empty input must give NaN")
	}
}

type fakeSender struct {
	mu    sync.Mutex
	seen  map[float64]int
	calls int
	name  string
	log   *[]string
	logMu *sync.Mutex
}

func (f *fakeSender) Send(_ context.Context, it *Item, keepRatio float64) *Sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.log != nil {
		f.logMu.Lock()
		if n := len(*f.log); n == 0 || (*f.log)[n-1] != f.name {
			*f.log = append(*f.log, f.name)
		}
		f.logMu.Unlock()
	}
	f.calls++
	f.seen[keepRatio]++
	s := &Sample{TTFTMs: 10 * keepRatio, E2EMs: 100, ITLMs: []float64{1, 3}, CompletionTokens: 3,
		KVBytesFull: 1000, KVBytesKept: int64(1000 * keepRatio)}
	if f.calls == 5 {
		s.Error = "boom"
	}
	return s
}

func TestRunAndSummarize(t *testing.T) {
	cfg := Config{Targets: []string{TargetGateway, TargetTriton}, Clients: 3, Requests: 12, Rounds: 3, KeepRatios: []float64{1, 0.1}, MaxTokens: 3}
	var order []string
	var orderMu sync.Mutex
	gw := &fakeSender{seen: map[float64]int{}, name: "g", log: &order, logMu: &orderMu}
	tr := &fakeSender{seen: map[float64]int{}, name: "t", log: &order, logMu: &orderMu}
	items := []*Item{{}, {}}
	phases, err := Run(context.Background(), cfg, items, map[string]Sender{TargetGateway: gw, TargetTriton: tr})
	if err != nil {
		t.Fatal(err)
	}
	if len(phases) != 2 || len(phases[0].Requests) != 12 || gw.seen[1] != 6 || gw.seen[0.1] != 6 || tr.calls != 12 {
		t.Fatalf("phases %d, gateway ratios %v, triton calls %d", len(phases), gw.seen, tr.calls)
	}
	if strings.Join(order, "") != "gtgtgt" {
		t.Fatalf("targets ran in the order %v, want 3 alternating rounds", order)
	}
	rep := Summarize(cfg, phases, map[string]string{"x": "y"})
	rows := rowsBy(rep, TargetGateway)
	all, r01 := rows[0], rows[0.1]
	if all.Requests != 12 || all.Errors != 1 || r01.Requests != 6 {
		t.Fatalf("rows: all %+v, 0.1 %+v", all, r01)
	}
	if r01.KVBytesKept != 100 || r01.KVBytesFull != 1000 || r01.TTFTMs.P50 != 1 {
		t.Fatalf("0.1 row %+v", r01)
	}
	// E2E@100 = TTFT + 99 * mean ITL (2 ms).
	if got := rows[1].E2E100Ms.P50; got != 10+99*2 {
		t.Fatalf("E2E@100 p50 = %g", got)
	}
	var b strings.Builder
	WriteTable(&b, rep)
	for _, want := range []string{"| gateway | all | 12 | 1 |", "| triton | 0.1 | 6 |", "Gateway overhead", "gateway: 1 errors, first: boom"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, b.String())
		}
	}
	files, err := WriteOutputs(t.TempDir(), cfg, rep)
	if err != nil || len(files) != 2 {
		t.Fatalf("plots %v, %v", files, err)
	}
}

func TestValidate(t *testing.T) {
	bad := []Config{
		{Targets: []string{"gateway"}, Clients: 0, Requests: 1, KeepRatios: []float64{1}, MaxTokens: 1},
		{Targets: []string{"gateway"}, Clients: 1, Requests: 1, KeepRatios: []float64{1.5}, MaxTokens: 1},
		{Targets: []string{"nowhere"}, Clients: 1, Requests: 1, KeepRatios: []float64{1}, MaxTokens: 1},
		{Clients: 1, Requests: 1, KeepRatios: []float64{1}, MaxTokens: 1},
	}
	for i, c := range bad {
		if c.Validate() == nil {
			t.Errorf("config %d passed validation", i)
		}
	}
}

const fixtureModel = "../../../testdata/tiny-llava-random"

func prepared(t *testing.T) []*Item {
	t.Helper()
	model, err := chat.Load(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := images.LoadProcessor(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	samples, err := eval.ReadJSONL(filepath.Join("../../../testdata/tiny-llava-trained/eval/eval.jsonl"), eval.MetricExactMatch)
	if err != nil {
		t.Fatal(err)
	}
	items, err := Prepare(context.Background(), model, proc, samples[:2], 2)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func TestPrepare(t *testing.T) {
	items := prepared(t)
	if len(items) != 2 {
		t.Fatal(len(items))
	}
	it := items[0]
	imageTokens := 0
	for _, id := range it.InputIDs {
		if id == 4 {
			imageTokens++
		}
	}
	if imageTokens != 2*64 || len(it.RGBImages) != 2 || len(it.RGBImages[0].RGB) != 112*112*3 || len(it.Request.Images[0].Encoded) == 0 {
		t.Fatalf("item: %d image tokens, %d images", imageTokens, len(it.RGBImages))
	}
}

// A fake SSE endpoint checks what the SDK sends and times three tokens.
func TestGatewaySender(t *testing.T) {
	var gotRatio, gotPolicy string
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotRatio, gotPolicy = r.Header.Get("X-KV-Cache-Ratio"), r.Header.Get("X-KV-Cache-Policy")
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, tok := range []string{"a", "b", "c"} {
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", tok)
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n")
		fmt.Fprint(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":140,\"completion_tokens\":3,\"total_tokens\":143,\"kv_cache\":{\"policy\":\"vlcache\",\"keep_ratio\":0.1,\"tokens_full\":2240,\"tokens_kept\":224,\"bytes_full\":573440,\"bytes_kept\":57344}}}\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()
	items := prepared(t)
	s := NewGatewaySender(srv.URL+"/v1", "", "m", "vlcache", 3, 0).Send(context.Background(), items[0], 0.1)
	if s.Error != "" {
		t.Fatal(s.Error)
	}
	if gotRatio != "0.1" || gotPolicy != "vlcache" {
		t.Fatalf("headers ratio %q policy %q", gotRatio, gotPolicy)
	}
	so, _ := body["stream_options"].(map[string]any)
	if body["stream"] != true || so["include_usage"] != true || body["max_tokens"] != float64(3) {
		t.Fatalf("body %v", body)
	}
	msgs, _ := body["messages"].([]any)
	content := msgs[0].(map[string]any)["content"].([]any)
	if len(content) != 3 || !strings.HasPrefix(content[0].(map[string]any)["image_url"].(map[string]any)["url"].(string), "data:image/png;base64,") {
		t.Fatalf("content %v", content)
	}
	if s.CompletionTokens != 3 || len(s.ITLMs) != 2 || s.KVBytesKept != 57344 || s.KVBytesFull != 573440 || s.FinishReason != "length" || s.E2EMs < s.TTFTMs {
		t.Fatalf("sample %+v", s)
	}
}
