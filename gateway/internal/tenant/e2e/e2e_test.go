//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/limits/redistest"
	"github.com/vlcache/vlcache/gateway/internal/telemetry"
	"github.com/vlcache/vlcache/gateway/internal/telemetry/otlptest"
)

// Loopback ports of this suite (the tenants area owns 18200-18299; Redis
// servers take 18250+).
const (
	tritonHTTP    = 18210
	tritonGRPC    = 18211
	tritonMetrics = 18212
	gatewayA      = 18220
	gatewayB      = 18221
	gatewayVictim = 18222
	gatewayLeaver = 18223
	modelName     = "tiny-llava-trained"
	leaseTTL      = 3 * time.Second
)

var root = func() string { r, _ := filepath.Abs("../../../.."); return r }()

// proc is a child process with one waiter goroutine; done closes when it exits.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(cmd *exec.Cmd, log string) (*proc, error) {
	// Dies with the test process, even when a timeout kills it before cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

func tail(path string) string {
	raw, _ := os.ReadFile(path)
	if len(raw) > 4000 {
		raw = raw[len(raw)-4000:]
	}
	return string(raw)
}

func buildGateway(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "vlcache-gateway")
	cmd := exec.Command("go", "build", "-o", bin, "./gateway/cmd/vlcache-gateway")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// startTriton runs scripts/triton-serve.sh in the foreground (it execs
// tritonserver), so the server is our child and dies with the test process.
func startTriton(t *testing.T, otlpAddr string) {
	logFile := filepath.Join(t.TempDir(), "tritonserver.log")
	f, err := os.Create(logFile)
	require.NoError(t, err)
	cmd := exec.Command(filepath.Join(root, "scripts/triton-serve.sh"), "--foreground",
		"--http", strconv.Itoa(tritonHTTP), "--grpc", strconv.Itoa(tritonGRPC), "--metrics", strconv.Itoa(tritonMetrics),
		"--trace-config", "mode=opentelemetry", "--trace-config", "rate=1", "--trace-config", "level=TIMESTAMPS",
		"--trace-config", "opentelemetry,url="+otlpAddr+"/v1/traces",
		"--trace-config", "opentelemetry,resource=service.name=tritonserver")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = f, f
	p, err := startProc(cmd, logFile)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.stop()
		f.Close()
		if t.Failed() {
			t.Logf("tritonserver log:\n%s", tail(logFile))
		}
	})
	require.Eventually(t, func() bool {
		if p.exited() {
			return true // fail below with the log rather than wait
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v2/health/ready", tritonHTTP))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 180*time.Second, 250*time.Millisecond, "tritonserver not ready")
	require.False(t, p.exited(), "tritonserver exited at start; log:\n%s", tail(logFile))
}

func startGateway(t *testing.T, bin string, port int, redisURL, otlpEndpoint string, extra ...string) *proc {
	logFile := filepath.Join(t.TempDir(), fmt.Sprintf("gateway-%d.log", port))
	f, err := os.Create(logFile)
	require.NoError(t, err)
	cmd := exec.Command(bin,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--triton-grpc", fmt.Sprintf("127.0.0.1:%d", tritonGRPC),
		"--model", modelName+"="+filepath.Join(root, "testdata", modelName),
		"--redis-url", redisURL, "--lease-ttl", leaseTTL.String(), "--redis-timeout", "500ms",
		"--log-format", "text")
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+otlpEndpoint, "OTEL_SERVICE_NAME=vlcache-gateway",
		"OTEL_BSP_SCHEDULE_DELAY=100")
	cmd.Stdout, cmd.Stderr = f, f
	p, err := startProc(cmd, logFile)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.stop()
		f.Close()
		if t.Failed() {
			t.Logf("gateway %d log:\n%s", port, tail(logFile))
		}
	})
	require.Eventually(t, func() bool {
		if p.exited() {
			return true
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 200*time.Millisecond, "gateway %d not ready", port)
	require.False(t, p.exited(), "gateway %d exited at start; log:\n%s", port, tail(logFile))
	return p
}

// tenants runs the operator command of the real binary.
func tenants(t *testing.T, bin, redisURL string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"tenants"}, append(args, "--redis-url", redisURL)...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "tenants %v: %s", args, stderr.String())
	return string(out)
}

func imageDataURL(t *testing.T) string {
	matches, err := filepath.Glob(filepath.Join(root, "testdata", modelName, "golden_images", "*.png"))
	require.NoError(t, err)
	require.NotEmpty(t, matches)
	raw, err := os.ReadFile(matches[0])
	require.NoError(t, err)
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(raw)
}

func chatParams(image string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:     modelName,
		MaxTokens: openai.Int(6),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: image}),
			openai.TextContentPart("What shape is in the frame?"),
		})},
	}
}

func client(port int, key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(fmt.Sprintf("http://127.0.0.1:%d/v1", port)),
		option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

type metricsScrape map[string]map[string]float64

func scrape(t *testing.T, port int) metricsScrape {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	out := metricsScrape{}
	for name, f := range fams {
		out[name] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			k := strings.Join(labels, ",")
			switch {
			case m.GetCounter() != nil:
				out[name][k] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				out[name][k] = float64(m.GetHistogram().GetSampleCount())
				out[name][k+",sum"] = m.GetHistogram().GetSampleSum()
			case m.GetGauge() != nil:
				out[name][k] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func TestE2E(t *testing.T) {
	ctx := context.Background()
	bin := buildGateway(t)
	redisSrv := redistest.Start(t)
	recv, err := otlptest.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { recv.Close() })
	startTriton(t, recv.Addr())

	acme := strings.TrimSpace(tenants(t, bin, redisSrv.URL(), "create", "acme", "--models", modelName,
		"--keep-ratio", "0.3", "--min-keep-ratio", "0.1", "--max-keep-ratio", "0.5", "--default-policy", "vlcache",
		"--rpm", "1000", "--tpm", "1000000", "--max-concurrent", "8"))
	limited := strings.TrimSpace(tenants(t, bin, redisSrv.URL(), "create", "limited", "--models", modelName, "--rpm", "3"))
	other := strings.TrimSpace(tenants(t, bin, redisSrv.URL(), "create", "other-model", "--models", "llava-13b"))

	startGateway(t, bin, gatewayA, redisSrv.URL(), recv.Endpoint())
	startGateway(t, bin, gatewayB, redisSrv.URL(), recv.Endpoint())
	image := imageDataURL(t)

	t.Run("trace from gateway into tritonserver", func(t *testing.T) {
		const traceID = "0af7651916cd43dd8448eb211c80319c"
		var httpResp *http.Response
		resp, err := client(gatewayA, acme).Chat.Completions.New(ctx, chatParams(image),
			option.WithHeader("traceparent", "00-"+traceID+"-b7ad6b7169203331-01"),
			option.WithResponseInto(&httpResp))
		require.NoError(t, err)
		require.NotEmpty(t, resp.Choices)
		require.Equal(t, "0.3", httpResp.Header.Get("X-KV-Cache-Ratio"), "the tenant's default ratio is applied and echoed")

		// Triton exports its request spans after their children (they end last), possibly in
		// a later batch, so wait until the tritonserver part of the tree is whole: every
		// tritonserver span's parent is in the trace, and one of them is a gateway span.
		var spans []otlptest.Span
		joined := func(spans []otlptest.Span) bool {
			byID := map[string]otlptest.Span{}
			for _, s := range spans {
				byID[s.SpanID] = s
			}
			toGateway, triton := false, 0
			for _, s := range spans {
				if s.Service == "vlcache-gateway" {
					continue
				}
				triton++
				p, ok := byID[s.ParentID]
				if !ok {
					return false // its parent has not arrived (or never ended)
				}
				toGateway = toGateway || p.Service == "vlcache-gateway"
			}
			return triton > 0 && toGateway
		}
		wantNames := []string{"POST /v1/chat/completions", telemetry.SpanAuth, telemetry.SpanImageFetch,
			telemetry.SpanPreprocess, telemetry.SpanTokenize, telemetry.SpanChargePrompt, telemetry.SpanTritonStream}
		gatewayNames := func(spans []otlptest.Span) map[string]bool {
			names := map[string]bool{}
			for _, s := range spans {
				if s.Service == "vlcache-gateway" {
					names[s.Name] = true
				}
			}
			return names
		}
		complete := func() bool {
			spans = recv.Traces()[traceID]
			names := gatewayNames(spans)
			for _, want := range wantNames {
				if !names[want] {
					return false
				}
			}
			return joined(spans)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !complete() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		names := gatewayNames(spans)
		for _, want := range wantNames {
			require.True(t, names[want], "gateway span %s in the trace; got %v", want, names)
		}
		require.True(t, joined(spans), "tritonserver's spans hang from the gateway's, none orphaned; "+
			"got %v; receiver errors: %v", spans, recv.Errors())
		tritonNames := map[string]bool{}
		for _, s := range spans {
			if s.Service != "vlcache-gateway" {
				tritonNames[s.Name] = true
			}
		}
		for _, want := range []string{modelName, "compute", "VLCACHE_QUEUE", "VLCACHE_PREFILL",
			"VLCACHE_COMPRESS", "VLCACHE_DECODE"} {
			require.True(t, tritonNames[want], "tritonserver span %s in the trace; got %v", want, tritonNames)
		}
		for _, s := range spans {
			if s.Name == telemetry.SpanTritonStream {
				require.Contains(t, s.Events, telemetry.EventFirstToken)
			}
		}
	})

	t.Run("ratio clamped and usage recorded", func(t *testing.T) {
		var httpResp *http.Response
		resp, err := client(gatewayB, acme).Chat.Completions.New(ctx, chatParams(image),
			option.WithHeader("X-KV-Cache-Ratio", "0.95"), option.WithResponseInto(&httpResp))
		require.NoError(t, err)
		require.Equal(t, "0.5", httpResp.Header.Get("X-KV-Cache-Ratio"), "acme cannot exceed its max ratio")
		var usage struct {
			KV struct {
				KeepRatio float64 `json:"keep_ratio"`
			} `json:"kv_cache"`
		}
		require.NoError(t, json.Unmarshal([]byte(resp.Usage.RawJSON()), &usage))
		require.Equal(t, 0.5, usage.KV.KeepRatio)

		var days []map[string]any
		require.NoError(t, json.Unmarshal([]byte(tenants(t, bin, redisSrv.URL(), "usage", "acme", "--json")), &days))
		require.Len(t, days, 1)
		d := days[0]
		require.EqualValues(t, 2, d["requests"], "both requests, through both gateways")
		require.Greater(t, d["prompt_tokens"].(float64), d["image_tokens"].(float64))
		require.EqualValues(t, 128, d["image_tokens"], "64 image tokens per request")
		require.Greater(t, d["completion_tokens"].(float64), 0.0)
		require.Greater(t, d["kv_bytes_kept"].(float64), 0.0)
		require.Greater(t, d["kv_bytes_saved"].(float64), d["kv_bytes_kept"].(float64), "a ratio <= 0.5 saves more than it keeps")
	})

	t.Run("limits hold across two gateways", func(t *testing.T) {
		ok, refused := 0, 0
		for i := range 5 {
			port := []int{gatewayA, gatewayB}[i%2]
			var httpResp *http.Response
			_, err := client(port, limited).Chat.Completions.New(ctx, chatParams(image), option.WithResponseInto(&httpResp))
			if err == nil {
				ok++
				continue
			}
			var apiErr *openai.Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
			require.Equal(t, "rate_limit_exceeded", apiErr.Code)
			h := apiErr.Response.Header
			require.Equal(t, "3", h.Get("x-ratelimit-limit-requests"))
			require.Equal(t, "0", h.Get("x-ratelimit-remaining-requests"))
			require.NotEmpty(t, h.Get("x-ratelimit-reset-requests"))
			ra, err := strconv.Atoi(h.Get("retry-after"))
			require.NoError(t, err)
			require.Positive(t, ra)
			refused++
		}
		require.Equal(t, 3, ok, "3 requests/min in total, whichever gateway serves them")
		require.Equal(t, 2, refused)
	})

	t.Run("keys and models are per tenant", func(t *testing.T) {
		_, err := client(gatewayA, other).Chat.Completions.New(ctx, chatParams(image))
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusForbidden, apiErr.StatusCode)
		_, err = client(gatewayA, acme+"x").Chat.Completions.New(ctx, chatParams(image))
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	})

	t.Run("metrics after requests", func(t *testing.T) {
		m := scrape(t, gatewayA)
		base := "model=" + modelName + ",tenant=acme"
		require.GreaterOrEqual(t, m["vlcache_gateway_requests_total"]["model="+modelName+",status=200,tenant=acme"], 1.0)
		require.GreaterOrEqual(t, m["vlcache_gateway_requests_total"]["model="+modelName+",status=429,tenant=limited"], 1.0)
		require.GreaterOrEqual(t, m["vlcache_gateway_time_to_first_token_seconds"][base], 1.0)
		require.Positive(t, m["vlcache_gateway_time_to_first_token_seconds"][base+",sum"])
		require.GreaterOrEqual(t, m["vlcache_gateway_inter_token_latency_seconds"][base], 1.0)
		require.GreaterOrEqual(t, m["vlcache_gateway_request_duration_seconds"]["model="+modelName+",status=200,tenant=acme"], 1.0)
		require.Positive(t, m["vlcache_gateway_tokens_total"]["kind=completion,"+base])
		require.Equal(t, 64.0, m["vlcache_gateway_tokens_total"]["kind=image,"+base], "one request with one image on this gateway")
		require.Positive(t, m["vlcache_gateway_kv_cache_bytes_total"]["kind=kept,"+base])
		require.Greater(t, m["vlcache_gateway_kv_cache_bytes_total"]["kind=saved,"+base], m["vlcache_gateway_kv_cache_bytes_total"]["kind=kept,"+base])
	})

	t.Run("redis outage: 503, then recovery without restart", func(t *testing.T) {
		redisSrv.Stop()
		_, err := client(gatewayA, acme).Chat.Completions.New(ctx, chatParams(image))
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusServiceUnavailable, apiErr.StatusCode)
		require.NotEmpty(t, apiErr.Response.Header.Get("retry-after"))
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", gatewayA))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "not ready while Redis is down")

		redisSrv.Restart()
		require.Eventually(t, func() bool {
			_, err := client(gatewayA, acme).Chat.Completions.New(ctx, chatParams(image))
			return err == nil
		}, 20*time.Second, 250*time.Millisecond, "requests succeed again once Redis is back")
	})

	t.Run("lease of a killed gateway lapses", func(t *testing.T) {
		single := strings.TrimSpace(tenants(t, bin, redisSrv.URL(), "create", "single", "--models", modelName, "--max-concurrent", "1"))
		// The victim gateway admits a request (taking the tenant's only lease)
		// and then waits on an image server that never answers; killing it there
		// leaves the lease in Redis with nobody to release it.
		fetching, release := make(chan struct{}, 1), make(chan struct{})
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case fetching <- struct{}{}:
			default:
			}
			<-release
		}))
		defer hang.Close()
		defer close(release) // before Close, which waits for the handler
		victim := startGateway(t, bin, gatewayVictim, redisSrv.URL(), recv.Endpoint(),
			"--image-allow-private", "--image-fetch-timeout", "5m")
		go func() {
			_, _ = client(gatewayVictim, single).Chat.Completions.New(context.Background(), chatParams(hang.URL+"/frame.png"))
		}()
		select {
		case <-fetching:
		case <-time.After(30 * time.Second):
			t.Fatal("the victim gateway never fetched the image")
		}
		victim.kill()

		_, err := client(gatewayA, single).Chat.Completions.New(ctx, chatParams(image))
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr, "the dead gateway's request still holds the only slot")
		require.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
		require.Equal(t, "concurrency_limit_exceeded", apiErr.Code)
		require.Eventually(t, func() bool {
			_, err := client(gatewayA, single).Chat.Completions.New(ctx, chatParams(image))
			return err == nil
		}, 5*leaseTTL, 250*time.Millisecond, "the lease lapses after --lease-ttl")
	})

	t.Run("client that goes away frees its slot at once", func(t *testing.T) {
		solo := strings.TrimSpace(tenants(t, bin, redisSrv.URL(), "create", "solo", "--models", modelName, "--max-concurrent", "1"))
		fetching, release := make(chan struct{}, 1), make(chan struct{})
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case fetching <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer hang.Close()
		defer close(release)
		// A lease TTL of 5 minutes: a slot freed within the wait below was freed
		// by the request ending, not by expiry.
		startGateway(t, bin, gatewayLeaver, redisSrv.URL(), recv.Endpoint(),
			"--image-allow-private", "--image-fetch-timeout", "5m", "--lease-ttl", "5m")
		cctx, cancel := context.WithCancel(ctx)
		gone := make(chan struct{})
		go func() {
			defer close(gone)
			_, _ = client(gatewayLeaver, solo).Chat.Completions.New(cctx, chatParams(hang.URL+"/frame.png"))
		}()
		select {
		case <-fetching:
		case <-time.After(30 * time.Second):
			t.Fatal("the gateway never fetched the image")
		}
		rdb := redisSrv.Client()
		held, err := rdb.ZCard(ctx, "vlcache:lease:solo").Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, held, "the request holds the tenant's only slot")
		cancel()
		<-gone
		require.Eventually(t, func() bool {
			n, err := rdb.ZCard(ctx, "vlcache:lease:solo").Result()
			return err == nil && n == 0
		}, 30*time.Second, 100*time.Millisecond, "the gateway released the slot when its client went away")
		_, err = client(gatewayLeaver, solo).Chat.Completions.New(ctx, chatParams(image))
		require.NoError(t, err)
	})
}
