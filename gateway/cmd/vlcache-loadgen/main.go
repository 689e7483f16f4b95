// Command vlcache-loadgen measures serving latency and throughput: N
// concurrent streaming clients with images against the gateway, and the same
// requests straight to tritonserver over gRPC in the same run, so the
// gateway's own overhead shows. docs/eval.md has the commands and results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/eval"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/loadgen"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Main(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vlcache-loadgen:", err)
		os.Exit(1)
	}
}

// Main runs the command; it is what the tests call.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vlcache-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gateway := fs.String("gateway", "http://127.0.0.1:8080/v1", "gateway base URL of the OpenAI API (empty: skip the gateway)")
	apiKey := fs.String("api-key", os.Getenv("VLCACHE_API_KEY"), "API key for the gateway (default $VLCACHE_API_KEY)")
	served := fs.String("served-model", "tiny-llava", "model name at the gateway")
	tritonAddr := fs.String("triton", "", "tritonserver gRPC address for the direct comparison (e.g. 127.0.0.1:8001; empty: skip)")
	tritonModel := fs.String("triton-model", "", "Triton model name (default: -served-model)")
	modelDir := fs.String("model", "testdata/tiny-llava-random", "model directory: chat template, tokenizer and image size for the direct requests")
	data := fs.String("data", "testdata/tiny-llava-trained/eval/eval.jsonl", "JSONL of images and questions (eval format) the requests are made from")
	nSamples := fs.Int("samples", 16, "distinct samples cycled through")
	frames := fs.Int("frames", 8, "images per request (the first N of a sample)")
	clients := fs.Int("clients", 4, "concurrent streaming clients per target")
	requests := fs.Int("requests", 32, "requests per target")
	rounds := fs.Int("rounds", 4, "each target's requests in this many turns, targets alternating (machine noise hits both alike)")
	maxDuration := fs.Duration("max-duration", 5*time.Minute, "time limit per target; requests not started by then are skipped")
	ratios := fs.String("keep-ratios", "1,0.5,0.1", "keep ratios, assigned round-robin")
	policy := fs.String("policy", "vlcache", "KV-cache policy")
	maxTokens := fs.Int("max-tokens", 100, "completion tokens per request at most")
	temperature := fs.Float64("temperature", 0, "sampling temperature")
	ignoreEOS := fs.Bool("ignore-eos", true, "generate past eos, so every request produces -max-tokens tokens (false: stop at eos)")
	warmup := fs.Int("warmup", 1, "unmeasured requests per target first")
	out := fs.String("out", "loadgen-results", "output directory: table.md, loadgen.json, latency.png/svg")
	progress := fs.Duration("progress", 5*time.Second, "progress interval on stderr (0: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := loadgen.Config{Clients: *clients, Requests: *requests, Rounds: *rounds, MaxDuration: *maxDuration, Policy: *policy,
		MaxTokens: *maxTokens, Temperature: *temperature, ServedModel: *served, TritonModel: *tritonModel,
		Progress: stderr, ProgressTick: *progress}
	if cfg.TritonModel == "" {
		cfg.TritonModel = *served
	}
	for _, f := range strings.Split(*ratios, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("keep ratio %q is not a number", f)
		}
		cfg.KeepRatios = append(cfg.KeepRatios, v)
	}
	senders := map[string]loadgen.Sender{}
	if *gateway != "" {
		cfg.Targets = append(cfg.Targets, loadgen.TargetGateway)
		g := loadgen.NewGatewaySender(*gateway, *apiKey, *served, *policy, *maxTokens, *temperature)
		g.IgnoreEOS = *ignoreEOS
		senders[loadgen.TargetGateway] = g
	}
	if *tritonAddr != "" {
		client, err := triton.Dial(*tritonAddr, triton.Options{})
		if err != nil {
			return err
		}
		defer client.Close()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = client.Ready(cctx, cfg.TritonModel)
		cancel()
		if err != nil {
			return fmt.Errorf("tritonserver at %s is not ready: %w", *tritonAddr, err)
		}
		cfg.Targets = append(cfg.Targets, loadgen.TargetTriton)
		senders[loadgen.TargetTriton] = &loadgen.TritonSender{Client: client, Model: cfg.TritonModel, Policy: *policy,
			MaxTokens: *maxTokens, Temperature: *temperature, IgnoreEOS: *ignoreEOS}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	model, err := chat.Load(*modelDir)
	if err != nil {
		return err
	}
	proc, err := images.LoadProcessor(*modelDir)
	if err != nil {
		return err
	}
	samples, err := eval.ReadJSONL(*data, eval.MetricExactMatch)
	if err != nil {
		return err
	}
	if *nSamples > 0 && *nSamples < len(samples) {
		samples = samples[:*nSamples]
	}
	items, err := loadgen.Prepare(ctx, model, proc, samples, *frames)
	if err != nil {
		return err
	}
	for _, t := range cfg.Targets {
		for i := 0; i < *warmup; i++ {
			if s := senders[t].Send(ctx, items[0], cfg.KeepRatios[0]); s.Error != "" {
				return fmt.Errorf("warm-up request to %s failed: %s", t, s.Error)
			}
		}
	}
	fmt.Fprintf(stderr, "[loadgen] targets %v, %d clients, %d requests each, keep ratios %v, %d tokens max\n",
		cfg.Targets, cfg.Clients, cfg.Requests, cfg.KeepRatios, cfg.MaxTokens)
	phases, runErr := loadgen.Run(ctx, cfg, items, senders)
	eos := "stop at eos"
	if *ignoreEOS {
		eos = "eos ignored (every request runs to the limit)"
	}
	settings := map[string]string{
		"targets":     strings.Join(cfg.Targets, ", ") + fmt.Sprintf(" (same requests; %d rounds, targets alternating within each)", max(1, min(cfg.Rounds, cfg.Requests))),
		"gateway":     *gateway + " model " + *served,
		"triton":      *tritonAddr + " model " + cfg.TritonModel,
		"clients":     strconv.Itoa(cfg.Clients) + " concurrent streams per target",
		"requests":    fmt.Sprintf("%d per target (time limit %s), %d warm-up", cfg.Requests, cfg.MaxDuration, *warmup),
		"prompts":     fmt.Sprintf("%d samples of %s, first %d images each + question, chat template of %s", len(items), *data, *frames, *modelDir),
		"keep ratios": *ratios + " (round-robin over requests), policy " + *policy,
		"decoding":    fmt.Sprintf("max %d tokens, temperature %g, %s", cfg.MaxTokens, cfg.Temperature, eos),
		"percentiles": "nearest rank; ITL = gaps between streamed tokens (a Triton response with several tokens shares its gap); E2E@100 = TTFT + 99 x the request's mean ITL",
	}
	rep := loadgen.Summarize(cfg, phases, settings)
	loadgen.WriteTable(stdout, rep)
	files, err := loadgen.WriteOutputs(*out, cfg, rep)
	if err != nil {
		return fmt.Errorf("failed to write results: %w", err)
	}
	fmt.Fprintf(stderr, "[loadgen] wrote %s/table.md, %s/loadgen.json, %s\n", *out, *out, strings.Join(files, " "))
	if runErr != nil {
		return runErr
	}
	var errs []error
	for _, r := range rep.Rows {
		if r.KeepRatio == 0 && r.Errors > 0 {
			errs = append(errs, fmt.Errorf("%s: %d of %d requests failed: %s", r.Target, r.Errors, r.Requests, r.FirstErrorMsg))
		}
	}
	return errors.Join(errs...)
}
