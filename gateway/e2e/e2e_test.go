//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Loopback ports of this suite (the gateway's range is 18100-18199).
const (
	tritonHTTP    = 18170
	tritonGRPC    = 18171
	tritonMetrics = 18172
	gatewayPort   = 18173
	modelName     = "tiny-llava"
	trainedModel  = "tiny-llava-trained" // answers in one token, then eos
)

var (
	root        string
	gatewayBin  string
	tritonPID   int
	startTriton func() (int, error)
	gatewayURL  = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort)
	metricsURL  = fmt.Sprintf("http://127.0.0.1:%d/metrics", tritonMetrics)
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	root = filepath.Join(filepath.Dir(file), "..", "..")
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup failed:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "vlcache-gateway-e2e")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)

	buildDir := os.Getenv("VLCACHE_BUILD_DIR")
	if buildDir == "" {
		buildDir = filepath.Join(root, "build")
	}
	tritonLog := filepath.Join(tmp, "tritonserver.log")
	startTriton = func() (int, error) {
		serve := exec.Command(filepath.Join(root, "scripts", "triton-serve.sh"), "--http", strconv.Itoa(tritonHTTP),
			"--grpc", strconv.Itoa(tritonGRPC), "--metrics", strconv.Itoa(tritonMetrics), "--log", tritonLog)
		serve.Env = append(os.Environ(), "VLCACHE_BUILD_DIR="+buildDir)
		serve.Stderr = os.Stderr
		out, err := serve.Output()
		if err != nil {
			return 0, fmt.Errorf("failed to start tritonserver: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			return 0, fmt.Errorf("triton-serve.sh printed %q, not a PID", out)
		}
		return pid, nil
	}
	if tritonPID, err = startTriton(); err != nil {
		return 1, err
	}
	defer func() { stopPID(tritonPID) }()

	bin := filepath.Join(tmp, "vlcache-gateway")
	gatewayBin = bin
	build := exec.Command("go", "build", "-o", bin, "./gateway/cmd/vlcache-gateway")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 1, fmt.Errorf("failed to build the gateway: %w", err)
	}
	gwLog, err := os.Create(filepath.Join(tmp, "gateway.log"))
	if err != nil {
		return 1, err
	}
	gw := gatewayCommand(gatewayPort)
	gw.Stdout, gw.Stderr = gwLog, gwLog
	if err := gw.Start(); err != nil {
		return 1, fmt.Errorf("failed to start the gateway: %w", err)
	}
	defer func() {
		_ = gw.Process.Signal(syscall.SIGTERM)
		_ = gw.Wait()
	}()
	if err := waitReady(gatewayURL+"/readyz", 60*time.Second); err != nil {
		dump(gwLog.Name())
		dump(tritonLog)
		return 1, err
	}
	code := m.Run()
	if code != 0 {
		dump(gwLog.Name())
	}
	return code, nil
}

func gatewayCommand(port int) *exec.Cmd {
	return exec.Command(gatewayBin, "-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-triton-grpc", fmt.Sprintf("127.0.0.1:%d", tritonGRPC), "-triton-max-backoff", "500ms",
		"-model", modelName+"="+filepath.Join(root, "testdata", "tiny-llava-random")+":"+modelName,
		"-model", trainedModel+"="+filepath.Join(root, "testdata", trainedModel)+":"+trainedModel)
}

func stopPID(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Signal(syscall.SIGTERM)
		for i := 0; i < 100; i++ {
			if p.Signal(syscall.Signal(0)) != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = p.Kill()
	}
}

func dump(path string) {
	b, _ := os.ReadFile(path)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	fmt.Fprintf(os.Stderr, "---- %s ----\n%s\n", path, b)
}

func waitReady(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last error %v)", url, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type goldenPrompt struct {
	Question string   `json:"question"`
	Images   []string `json:"images"`
	InputIDs []int    `json:"input_ids"`
	Ours     struct {
		Greedy     []int  `json:"greedy_16"`
		GreedyText string `json:"greedy_16_text"`
	} `json:"ours"`
}

func golden(t *testing.T) []goldenPrompt { return goldenOf(t, "tiny-llava-random") }

// goldenOf reads testdata/<checkpoint>/golden.json.
func goldenOf(t *testing.T, checkpoint string) []goldenPrompt {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "testdata", checkpoint, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Prompts []goldenPrompt `json:"prompts"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g.Prompts
}

func imageURL(t *testing.T, rel string) string {
	b, err := os.ReadFile(filepath.Join(root, "testdata", "tiny-llava-random", rel))
	if err != nil {
		t.Fatal(err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

func client() openai.Client {
	return openai.NewClient(option.WithBaseURL(gatewayURL+"/v1"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
}

func params(t *testing.T, p goldenPrompt, maxTokens int64) openai.ChatCompletionNewParams {
	var parts []openai.ChatCompletionContentPartUnionParam
	for _, img := range p.Images {
		parts = append(parts, openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: imageURL(t, img)}))
	}
	parts = append(parts, openai.TextContentPart(p.Question))
	return openai.ChatCompletionNewParams{
		Model:       modelName,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage(parts)},
		MaxTokens:   openai.Int(maxTokens),
		Temperature: openai.Float(0),
	}
}

type kvUsage struct {
	Policy     string  `json:"policy"`
	KeepRatio  float64 `json:"keep_ratio"`
	TokensFull int64   `json:"tokens_full"`
	TokensKept int64   `json:"tokens_kept"`
	BytesFull  int64   `json:"bytes_full"`
	BytesKept  int64   `json:"bytes_kept"`
}

func kvFrom(t *testing.T, rawUsage string) kvUsage {
	t.Helper()
	var u struct {
		KV *kvUsage `json:"kv_cache"`
	}
	if err := json.Unmarshal([]byte(rawUsage), &u); err != nil || u.KV == nil {
		t.Fatalf("usage has no kv_cache: %s (%v)", rawUsage, err)
	}
	return *u.KV
}

// At keep ratio 1 every golden prompt gives the golden greedy text.
func TestE2EGoldenTextNonStreaming(t *testing.T) {
	c := client()
	for i, p := range golden(t) {
		var httpResp *http.Response
		resp, err := c.Chat.Completions.New(context.Background(), params(t, p, 16),
			option.WithHeader("X-KV-Cache-Ratio", "1.0"), option.WithResponseInto(&httpResp))
		if err != nil {
			t.Fatalf("prompt %d: %v", i, err)
		}
		if got := resp.Choices[0].Message.Content; got != p.Ours.GreedyText {
			t.Errorf("prompt %d: %q, want the golden %q", i, got, p.Ours.GreedyText)
		}
		if resp.Choices[0].FinishReason != "length" || resp.Usage.PromptTokens != int64(len(p.InputIDs)) ||
			resp.Usage.CompletionTokens != 16 || !strings.Contains(resp.Usage.RawJSON(), fmt.Sprintf(`"image_tokens":%d`, 64*len(p.Images))) {
			t.Errorf("prompt %d: finish %q usage %+v", i, resp.Choices[0].FinishReason, resp.Usage)
		}
		kv := kvFrom(t, resp.Usage.RawJSON())
		if kv.KeepRatio != 1 || kv.TokensKept != kv.TokensFull || kv.TokensFull == 0 {
			t.Errorf("prompt %d: kv_cache %+v", i, kv)
		}
		if httpResp.Header.Get("X-KV-Cache-Ratio") != "1" || httpResp.Header.Get("X-Request-Id") == "" {
			t.Errorf("headers %v", httpResp.Header)
		}
	}
}

func TestE2EGoldenTextStreaming(t *testing.T) {
	p := golden(t)[0]
	pr := params(t, p, 16)
	pr.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	c := client()
	stream := c.Chat.Completions.NewStreaming(context.Background(), pr, option.WithHeader("X-KV-Cache-Ratio", "1.0"))
	var text strings.Builder
	var finish, usage string
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Delta.Content)
			if r := ch.Choices[0].FinishReason; r != "" {
				finish = r
			}
		}
		if ch.Usage.CompletionTokens > 0 {
			usage = ch.Usage.RawJSON()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != p.Ours.GreedyText || finish != "length" {
		t.Fatalf("streamed %q (finish %q), want %q", text.String(), finish, p.Ours.GreedyText)
	}
	if kv := kvFrom(t, usage); kv.TokensKept != kv.TokensFull {
		t.Fatalf("kv_cache %+v", kv)
	}
}

// A stop string ends the generation early (the gateway cancels the Triton
// stream before the final response); usage.kv_cache still has the KV counts,
// which the backend sent with the first response.
func TestE2EStopStringKeepsKVUsage(t *testing.T) {
	p := golden(t)[0]
	const stop = " bot"
	cut := strings.Index(p.Ours.GreedyText, stop)
	if cut <= 0 {
		t.Fatalf("golden text %q lacks the stop string %q", p.Ours.GreedyText, stop)
	}
	c := client()
	pr := params(t, p, 16)
	pr.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
	resp, err := c.Chat.Completions.New(context.Background(), pr, option.WithHeader("X-KV-Cache-Ratio", "1.0"))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content; got != p.Ours.GreedyText[:cut] || resp.Choices[0].FinishReason != "stop" {
		t.Fatalf("%q (finish %q), want %q cut at %q", got, resp.Choices[0].FinishReason, p.Ours.GreedyText, stop)
	}
	if resp.Usage.CompletionTokens >= 16 {
		t.Errorf("completion_tokens %d: the stop string did not end the generation early", resp.Usage.CompletionTokens)
	}
	kv := kvFrom(t, resp.Usage.RawJSON())
	if kv.TokensKept <= 0 || kv.TokensKept != kv.TokensFull || kv.BytesKept <= 0 || kv.BytesKept != kv.BytesFull {
		t.Fatalf("usage.kv_cache after a stop-string stop: %+v", kv)
	}

	// Streamed, with the usage chunk at the end.
	pr.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(context.Background(), pr, option.WithHeader("X-KV-Cache-Ratio", "1.0"))
	var text strings.Builder
	var usage string
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Delta.Content)
		}
		if ch.Usage.CompletionTokens > 0 {
			usage = ch.Usage.RawJSON()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != p.Ours.GreedyText[:cut] {
		t.Fatalf("streamed %q, want %q", text.String(), p.Ours.GreedyText[:cut])
	}
	if kv := kvFrom(t, usage); kv.TokensKept <= 0 || kv.TokensKept != kv.TokensFull {
		t.Fatalf("streamed usage.kv_cache after a stop-string stop: %+v", kv)
	}
}

// X-KV-Cache-Ratio 0.1 reaches the backend and comes back in usage as about
// 10% of the prompt's cache kept, streaming and not.
func TestE2EKeepRatioTenth(t *testing.T) {
	c := client()
	for _, p := range golden(t) {
		var httpResp *http.Response
		resp, err := c.Chat.Completions.New(context.Background(), params(t, p, 8),
			option.WithHeader("X-KV-Cache-Ratio", "0.1"), option.WithResponseInto(&httpResp))
		if err != nil {
			t.Fatal(err)
		}
		kv := kvFrom(t, resp.Usage.RawJSON())
		frac := float64(kv.TokensKept) / float64(kv.TokensFull)
		t.Logf("%d prompt tokens: kept %d of %d KV entries (%.3f), %d of %d bytes", len(p.InputIDs), kv.TokensKept, kv.TokensFull, frac, kv.BytesKept, kv.BytesFull)
		if kv.KeepRatio != 0.1 || frac < 0.08 || frac > 0.12 || kv.BytesKept >= kv.BytesFull {
			t.Errorf("kv_cache %+v: kept fraction %.3f", kv, frac)
		}
		if httpResp.Header.Get("X-KV-Cache-Ratio") != "0.1" || httpResp.Header.Get("X-KV-Cache-Policy") == "" {
			t.Errorf("headers %v", httpResp.Header)
		}
	}
	// The body extension, streamed, with the context-first point after the images.
	p := golden(t)[2]
	pr := params(t, p, 4)
	pr.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	pr.SetExtraFields(map[string]any{"kv_cache": map[string]any{"keep_ratio": 0.1, "policy": "vlcache", "compress_after": "images"}})
	stream := c.Chat.Completions.NewStreaming(context.Background(), pr)
	var usage string
	for stream.Next() {
		if ch := stream.Current(); ch.Usage.CompletionTokens > 0 {
			usage = ch.Usage.RawJSON()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	kv := kvFrom(t, usage)
	if kv.Policy != "vlcache" || kv.TokensKept >= kv.TokensFull {
		t.Fatalf("context-first kv_cache %+v", kv)
	}
}

// P3: the first turn (images and question) is compressed, the later turns
// go over the compressed cache.
func TestE2EContextFirstTurn(t *testing.T) {
	p := golden(t)[1]
	pr := params(t, p, 4)
	pr.Messages = append(pr.Messages, openai.AssistantMessage("blue"), openai.UserMessage("And which shape is red?"))
	pr.SetExtraFields(map[string]any{"kv_cache": map[string]any{"keep_ratio": 0.2, "compress_after": "first_turn"}})
	c := client()
	resp, err := c.Chat.Completions.New(context.Background(), pr)
	if err != nil {
		t.Fatal(err)
	}
	kv := kvFrom(t, resp.Usage.RawJSON())
	if kv.KeepRatio != 0.2 || kv.TokensKept >= kv.TokensFull || resp.Usage.PromptTokens <= int64(len(p.InputIDs)) {
		t.Fatalf("kv_cache %+v, prompt tokens %d", kv, resp.Usage.PromptTokens)
	}
}

// ignore_eos (vLLM's extension) reaches the backend: the trained model answers
// in one token and then eos, so without it the completion is 2 tokens ending in
// "stop", with it exactly max_tokens ending in "length" (eos is not text).
func TestE2EIgnoreEOS(t *testing.T) {
	p := goldenOf(t, trainedModel)[1]
	var parts []openai.ChatCompletionContentPartUnionParam
	for _, img := range p.Images {
		png, err := os.ReadFile(filepath.Join(root, "testdata", trainedModel, img))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{
			URL: "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)}))
	}
	parts = append(parts, openai.TextContentPart(p.Question))
	pr := openai.ChatCompletionNewParams{
		Model:       trainedModel,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage(parts)},
		MaxTokens:   openai.Int(12),
		Temperature: openai.Float(0),
	}
	c := client()
	stopped, err := c.Chat.Completions.New(context.Background(), pr)
	if err != nil {
		t.Fatal(err)
	}
	if stopped.Choices[0].FinishReason != "stop" || stopped.Usage.CompletionTokens != 2 {
		t.Fatalf("without ignore_eos: finish %q, %d tokens", stopped.Choices[0].FinishReason, stopped.Usage.CompletionTokens)
	}
	past, err := c.Chat.Completions.New(context.Background(), pr, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if past.Choices[0].FinishReason != "length" || past.Usage.CompletionTokens != 12 {
		t.Fatalf("with ignore_eos: finish %q, %d tokens", past.Choices[0].FinishReason, past.Usage.CompletionTokens)
	}
	if past.Choices[0].Message.Content != stopped.Choices[0].Message.Content {
		t.Fatalf("text %q, want the same answer %q (eos decodes to nothing)", past.Choices[0].Message.Content,
			stopped.Choices[0].Message.Content)
	}
}

func TestE2EBadRequestsSDK(t *testing.T) {
	c := client()
	p := params(t, golden(t)[0], 4)
	for _, tc := range []struct {
		name  string
		opts  []option.RequestOption
		param string
	}{
		{"ratio header", []option.RequestOption{option.WithHeader("X-KV-Cache-Ratio", "2")}, "X-KV-Cache-Ratio"},
		{"tools", []option.RequestOption{option.WithJSONSet("tools", []map[string]any{{"type": "function", "function": map[string]any{"name": "f"}}})}, "tools"},
		{"n", []option.RequestOption{option.WithJSONSet("n", 2)}, "n"},
		{"policy", []option.RequestOption{option.WithHeader("X-KV-Cache-Policy", "nonsense")}, "kv_cache.policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Chat.Completions.New(context.Background(), p, tc.opts...)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != tc.param || apiErr.Message == "" {
				t.Fatalf("err = %v, want a 400 naming %s", err, tc.param)
			}
		})
	}
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "60"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return string(out)
}

func TestE2ECurl(t *testing.T) {
	p := golden(t)[0]
	body := fmt.Sprintf(`{"model": %q, "max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": [
	  {"type": "image_url", "image_url": {"url": %q}}, {"type": "text", "text": %q}]}]}`, modelName, imageURL(t, p.Images[0]), p.Question)
	f := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out := curl(t, gatewayURL+"/v1/chat/completions", "-H", "Content-Type: application/json", "-H", "X-KV-Cache-Ratio: 1.0", "-d", "@"+f)
	var resp struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Choices) != 1 || resp.Choices[0].Message.Content != p.Ours.GreedyText {
		t.Fatalf("curl: %s", out)
	}
	streamBody := strings.Replace(body, `"max_tokens"`, `"stream": true, "stream_options": {"include_usage": true}, "max_tokens"`, 1)
	if err := os.WriteFile(f, []byte(streamBody), 0o600); err != nil {
		t.Fatal(err)
	}
	out = curl(t, "-N", gatewayURL+"/v1/chat/completions", "-H", "X-KV-Cache-Ratio: 0.1", "-d", "@"+f)
	if !strings.HasSuffix(strings.TrimSpace(out), "data: [DONE]") || !strings.Contains(out, `"kv_cache"`) || !strings.Contains(out, `"role":"assistant"`) {
		t.Fatalf("curl stream: %s", out)
	}
	out = curl(t, "-i", gatewayURL+"/v1/chat/completions", "-d", `{"model": "tiny-llava", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}`)
	if !strings.HasPrefix(out, "HTTP/1.1 400") || !strings.Contains(out, `"param":"response_format"`) || !strings.Contains(strings.ToLower(out), "x-request-id:") {
		t.Fatalf("curl bad request: %s", out)
	}
}

var metricLine = regexp.MustCompile(`(?m)^(vlcache_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$`)

// backendMetric reads one of the backend's Prometheus metrics for the model.
func backendMetric(t *testing.T, name, extraLabel string) float64 {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		if m[1] == name && strings.Contains(m[2], `model="`+modelName+`"`) && strings.Contains(m[2], extraLabel) {
			v, _ := strconv.ParseFloat(m[3], 64)
			return v
		}
	}
	t.Fatalf("metric %s{%s} not found", name, extraLabel)
	return 0
}

// A client hanging up mid-stream cancels the Triton stream, and the backend
// frees the sequence and its KV blocks.
func TestE2EHangUpFreesSequence(t *testing.T) {
	cancelledBefore := backendMetric(t, "vlcache_sequences_finished_total", `reason="cancelled"`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gatewayURL+"/v1/chat/completions", strings.NewReader(streamBody(t, 3000)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ { // role chunk and a couple of tokens
		if line, err := r.ReadString('\n'); err != nil {
			t.Fatalf("read %q: %v", line, err)
		}
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cancelled := backendMetric(t, "vlcache_sequences_finished_total", `reason="cancelled"`)
		running := backendMetric(t, "vlcache_sequences_running", "")
		free := backendMetric(t, "vlcache_kv_pool_free_bytes", "")
		capacity := backendMetric(t, "vlcache_kv_pool_capacity_bytes", "")
		if cancelled > cancelledBefore && running == 0 && free == capacity {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sequence not freed: cancelled %v (before %v), running %v, free %v of %v", cancelled, cancelledBefore, running, free, capacity)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func streamBody(t *testing.T, maxTokens int) string {
	p := golden(t)[0]
	return fmt.Sprintf(`{"model": %q, "stream": true, "max_tokens": %d, "messages": [{"role": "user", "content": [
	  {"type": "image_url", "image_url": {"url": %q}}, {"type": "text", "text": %q}]}]}`, modelName, maxTokens, imageURL(t, p.Images[0]), p.Question)
}

// SIGTERM lets an open stream finish before the gateway exits.
func TestE2EGracefulShutdown(t *testing.T) {
	const port = 18174
	gw := gatewayCommand(port)
	var logs strings.Builder
	gw.Stdout, gw.Stderr = &logs, &logs
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = gw.Process.Kill() }()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitReady(url+"/readyz", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(streamBody(t, 400)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q %v", line, err)
	}
	if err := gw.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("stream cut: %v", err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(rest)), "data: [DONE]") || !strings.Contains(string(rest), `"finish_reason":"length"`) {
		t.Fatalf("the open stream did not finish: ...%s", rest[max(0, len(rest)-300):])
	}
	if err := gw.Wait(); err != nil {
		t.Fatalf("gateway exit: %v\n%s", err, logs.String())
	}
}

// After tritonserver restarts, the same gateway serves again without a restart
// of its own. Runs last: it replaces the suite's tritonserver.
func TestE2ETritonRestart(t *testing.T) {
	stopPID(tritonPID)
	resp, err := http.Get(gatewayURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz with tritonserver down: %d", resp.StatusCode)
	}
	c := client()
	if _, err := c.Chat.Completions.New(context.Background(), params(t, golden(t)[0], 2)); err == nil {
		t.Fatal("a chat must fail while tritonserver is down")
	} else if apiErr := (*openai.Error)(nil); !errors.As(err, &apiErr) || apiErr.StatusCode != 503 {
		t.Fatalf("err = %v, want a 503", err)
	}
	if tritonPID, err = startTriton(); err != nil {
		t.Fatal(err)
	}
	if err := waitReady(gatewayURL+"/readyz", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	p := golden(t)[0]
	resp2, err := c.Chat.Completions.New(context.Background(), params(t, p, 16))
	if err != nil {
		t.Fatal(err)
	}
	if resp2.Choices[0].Message.Content != p.Ours.GreedyText {
		t.Fatalf("after restart: %q", resp2.Choices[0].Message.Content)
	}
}
