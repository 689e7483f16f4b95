package eval

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/tokenizer"
)

const fakeRunnerEnv = "VLCACHE_EVAL_FAKE_RUNNER"

// TestMain lets the test binary stand in for the engine runner in the
// EngineBackend tests below (the real runner is exercised by the smoke test).
func TestMain(m *testing.M) {
	if os.Getenv(fakeRunnerEnv) == "1" {
		os.Exit(fakeRunner(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeRunner speaks the runner's JSONL protocol: it checks each request's
// shape, answers with the reference prediction at keep ratio 1 and "x"
// otherwise, refuses policy "bogus", and replies out of order.
func fakeRunner(args []string) int {
	modelDir := ""
	for i, a := range args {
		if a == "--model" && i+1 < len(args) {
			modelDir = args[i+1]
		}
	}
	tok, err := tokenizer.Load(modelDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ref, err := ReadReference(filepath.Join(modelDir, "eval", "predictions_full_cache.jsonl"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var outMu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	var wg sync.WaitGroup
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var req engineRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "bad line:", err)
			return 3
		}
		wg.Add(1)
		go func(req engineRequest) {
			defer wg.Done()
			time.Sleep(time.Duration(rand.Intn(5)) * time.Millisecond)
			res := map[string]any{"id": req.ID}
			imageTokens := 0
			for _, id := range req.InputIDs {
				if id == 4 {
					imageTokens++
				}
			}
			problem := ""
			switch {
			case req.Policy == "bogus":
				problem = "kv_policy: unknown policy bogus"
			case imageTokens != 64*len(req.Images):
				problem = fmt.Sprintf("images: %d image tokens for %d images", imageTokens, len(req.Images))
			case req.MaxTokens != 5:
				problem = "max_tokens"
			}
			for _, im := range req.Images {
				b, err := base64.StdEncoding.DecodeString(im.RGBB64)
				if err != nil || len(b) != im.Height*im.Width*3 || im.Height != 112 {
					problem = "images: bad pixels"
				}
			}
			if problem != "" {
				res["error"] = problem
			} else {
				answer := "x"
				if req.KeepRatio == 1 {
					answer = ref[strings.SplitN(req.ID, "-", 2)[0]]
				}
				ids := append(tok.Encode(" "+answer, false), 2)
				stats := map[string]any{"prompt_tokens": len(req.InputIDs), "policy": req.Policy, "keep_ratio": req.KeepRatio,
					"kv_bytes_full": 1000, "kv_bytes_kept": int(1000 * req.KeepRatio), "kv_tokens_full": 16 * len(req.InputIDs),
					"layers": []map[string]any{{"budget": 10, "sparsity": 0.2}, {"budget": 20, "sparsity": nil}, {"budget": 30, "sparsity": 0.5}, {"budget": 40, "sparsity": 0.1}}}
				if req.ReturnKeptPositions {
					kept := make([][][]int, 4)
					for l := range kept {
						kept[l] = make([][]int, 4)
						for h := range kept[l] {
							for p := l * 7; p < len(req.InputIDs); p += 3 + h {
								kept[l][h] = append(kept[l][h], p)
							}
						}
					}
					stats["kept_positions"] = kept
				}
				res["output_ids"], res["finish_reason"], res["stats"] = ids, "stop", stats
			}
			outMu.Lock()
			_ = out.Encode(res)
			outMu.Unlock()
		}(req)
	}
	wg.Wait()
	return 0
}

func startFake(t *testing.T) (*EngineBackend, *chat.Model) {
	t.Helper()
	model, err := chat.Load(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeRunnerEnv, "1")
	eb, err := StartEngine(model, os.Args[0], fixtureModel, nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eb.Close() })
	return eb, model
}

func TestEngineRunEndToEnd(t *testing.T) {
	t.Run("stream", func(t *testing.T) {
		eb, model := startFake(t)
		testRunEndToEnd(t, eb, model, false)
	})
	t.Run("batch", func(t *testing.T) {
		model, err := chat.Load(fixtureModel)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(fakeRunnerEnv, "1")
		bb, err := NewBatchEngine(model, os.Args[0], fixtureModel, nil, 7, 2, 20*time.Millisecond, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		testRunEndToEnd(t, bb, model, true)
		if err := bb.Close(); err != nil {
			t.Fatal(err)
		}
		// 108 predictions, 18 of them copies of "full": 90 requests in batches of at most 7.
		if n := bb.Batches(); n < 90/7 {
			t.Fatalf("%d runner processes for 90 requests in batches of 7", n)
		}
	})
}

func testRunEndToEnd(t *testing.T, eb Backend, model *chat.Model, dedupe bool) {
	samples := loadFixture(t)[:6]
	scenes, err := ReadScenes(filepath.Join(fixtureEval(t), "scenes.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	AttachFollowUps(samples, scenes)
	proc, err := images.LoadProcessor(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Protocols: []string{"P1", "P2", "P3"}, Policies: []string{"full", "vlcache", "bogus"}, KeepRatios: []float64{1, 0.1},
		MaxTokens: 5, Inflight: 4, SampleWorkers: 2, Processor: proc, PlotSample: "0", PlotPolicies: []string{"vlcache"}, PlotRatio: 0.1,
		DedupeFull: dedupe}
	res, err := Run(context.Background(), eb, model, samples, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := 6 * 3 * 3 * 2; len(res.Predictions) != want {
		t.Fatalf("%d predictions, want %d", len(res.Predictions), want)
	}
	ref, _ := ReadReference(filepath.Join(fixtureEval(t), "predictions_full_cache.jsonl"))
	byID := map[string]*Prediction{}
	for _, p := range res.Predictions {
		byID[p.RequestID] = p
		switch {
		case p.Policy == "bogus":
			if p.Error == "" || p.Score != 0 {
				t.Fatalf("%s: the runner's refusal was not recorded: %+v", p.RequestID, p)
			}
		case p.Error != "":
			t.Fatalf("%s failed: %s", p.RequestID, p.Error)
		case p.KeepRatio == 1 && p.Protocol != ProtocolFollowUp && p.Prediction != ref[p.Sample]:
			t.Fatalf("%s: prediction %q, runner said %q", p.RequestID, p.Prediction, ref[p.Sample])
		}
	}
	for _, s := range samples {
		if dedupe {
			// "full" at 0.1 is a copy of "full" at 1 (the fake answers "x" below 1 when asked).
			c := byID[requestID(s.ID, "P1", "full", 0.1)+"-copy"]
			if c == nil || c.Prediction != ref[s.ID] || byID[requestID(s.ID, "P1", "full", 0.1)] != nil {
				t.Fatalf("sample %s: full at 0.1 was not copied from full at 1: %+v", s.ID, c)
			}
		}
		p3 := byID[requestID(s.ID, "P3", "vlcache", 0.1)]
		p1 := byID[requestID(s.ID, "P1", "vlcache", 0.1)]
		if p3 == nil || p1 == nil || p3.FirstAnswer != p1.Prediction || p3.Question != s.FollowUp.Question {
			t.Fatalf("sample %s: P3 did not follow P1's answer: %+v / %+v", s.ID, p3, p1)
		}
	}
	sum := Summarize(res, BaseSettings(cfg, eb.Describe(), "eval.jsonl", len(samples), res.FollowUps), ref)
	c, ok := sum.Lookup("P1", "full", 1, TypeAll)
	wantCorrect := 0
	for _, s := range samples {
		if ref[s.ID] == s.Answers[0] {
			wantCorrect++
		}
	}
	if !ok || c.N != 6 || c.ScoreSum != float64(wantCorrect) {
		t.Fatalf("P1 full@1 cell %+v, want %d of 6 correct", c, wantCorrect)
	}
	for _, d := range sum.Reference {
		want := 0
		if d.Policy == "bogus" {
			want = 6
		}
		if d.Differ != want || d.Compared != 6 {
			t.Fatalf("reference diff %+v, want %d differing of 6", d, want)
		}
	}
	var table strings.Builder
	WriteTable(&table, cfg, sum)
	for _, want := range []string{"### P1, all (n = 6 per cell)", "| full |", "| P2 | full | 6 | 0 |", "failed requests scored 0", "### P3, "} {
		if !strings.Contains(table.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, table.String())
		}
	}

	dir := t.TempDir()
	if err := WriteOutputs(dir, res, sum); err != nil {
		t.Fatal(err)
	}
	files, err := WritePlots(dir, res, sum)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"accuracy.png", "accuracy.svg", "accuracy_by_type.png", "layers.png", "layers.svg", "kept_P1_vlcache_0.1.png", "kept_P2_vlcache_0.1.svg"} {
		if !containsSuffix(files, want) {
			t.Fatalf("plots %v lack %s", files, want)
		}
	}
	f, err := os.Open(filepath.Join(dir, "kept_P1_vlcache_0.1.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("kept plot is not a PNG: %v", err)
	}
	back, settings, err := LoadResults(dir, samples)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Predictions) != len(res.Predictions) || strings.Join(back.Config.Policies, ",") != "full,vlcache,bogus" ||
		strings.Join(back.Config.Protocols, ",") != "P1,P2,P3" || len(back.Config.KeepRatios) != 2 || back.Plot == nil ||
		back.Plot.Sample != samples[0] || len(settings) != len(sum.Settings) {
		t.Fatalf("results read back: %d predictions, config %+v", len(back.Predictions), back.Config)
	}
	b, err := os.ReadFile(filepath.Join(dir, "predictions.jsonl"))
	if err != nil || strings.Count(string(b), "\n") != len(res.Predictions) {
		t.Fatalf("predictions.jsonl: %v, %d lines", err, strings.Count(string(b), "\n"))
	}
}

func containsSuffix(files []string, suffix string) bool {
	for _, f := range files {
		if strings.HasSuffix(f, "/"+suffix) {
			return true
		}
	}
	return false
}

func TestEngineRunnerExitFailsRequests(t *testing.T) {
	eb, _ := startFake(t)
	eb.Kill()
	req := &Request{ID: "x", Messages: []chat.Message{{Role: "user", Text: "hi"}}, MaxTokens: 5, Policy: "full", KeepRatio: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := eb.Generate(ctx, req); err == nil || ctx.Err() != nil {
		t.Fatalf("a dead runner must fail the request promptly, got %v", err)
	}
}

func TestKeptGrid(t *testing.T) {
	// Two 2x2 images at positions 1-4 and 6-9; two heads.
	pos := [][]int{{1, 2, 3, 4}, {6, 7, 8, 9}}
	grid := KeptGrid(pos, [][]int{{1, 4, 9, 5}, {1, 7}})
	want := [][]float64{{1, 0, 0, 0.5}, {0, 0.5, 0, 0.5}}
	for r := range want {
		for c := range want[r] {
			if grid[r][c] != want[r][c] {
				t.Fatalf("grid = %v, want %v", grid, want)
			}
		}
	}
}

func TestBatchRunnerFailureFailsRequests(t *testing.T) {
	model, err := chat.Load(fixtureModel)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := NewBatchEngine(model, "false", fixtureModel, nil, 2, 1, 10*time.Millisecond, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := &Request{ID: "x", Messages: []chat.Message{{Role: "user", Text: "hi"}}, MaxTokens: 5, Policy: "full", KeepRatio: 1}
	_, err = bb.Generate(ctx, req)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "without a result") {
		t.Fatalf("a runner that exits must fail its batch promptly, got %v", err)
	}
	if _, err := NewBatchEngine(model, "/nonexistent/vlcache-run", fixtureModel, nil, 2, 1, time.Millisecond, io.Discard); err == nil {
		t.Fatal("a missing runner must be refused up front")
	}
}
