// Command vlcache-eval measures answer accuracy against KV-cache keep ratio
// for every compression policy, through the engine's runner or a running
// gateway. docs/eval.md describes the formats and the choices.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/eval"
	"github.com/vlcache/vlcache/gateway/internal/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Main(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vlcache-eval:", err)
		os.Exit(1)
	}
}

type options struct {
	model, data, scenes, reference, metric string
	limit                                  int
	protocols, policies, ratios            string
	budgetMode                             string
	maxTokens                              int
	runner, runnerArgs, runnerMode         string
	batchSize, runnerProcs                 int
	flushDelay                             time.Duration
	gateway, apiKey, servedModel           string
	inflight, sampleWorkers                int
	out                                    string
	plotSample, plotPolicies               string
	plotRatio                              float64
	progress                               time.Duration
	noPlots, checkReference, dedupeFull    bool
	policyHeader                           string
	from                                   string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("vlcache-eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.model, "model", "testdata/tiny-llava-trained", "model directory (Hugging Face layout): chat template, tokenizer, image size")
	fs.StringVar(&o.data, "data", "", "evaluation JSONL (default: <model>/eval/eval.jsonl)")
	fs.StringVar(&o.scenes, "scenes", "", "scenes JSONL for P3 follow-up questions (default: scenes.jsonl beside the data, if present)")
	fs.StringVar(&o.reference, "reference", "", "reference predictions JSONL compared at keep ratio 1 (default: predictions_full_cache.jsonl beside the data, if present; 'none' to skip)")
	fs.StringVar(&o.metric, "metric", eval.MetricExactMatch, "metric for lines that name none: exact_match, anls or relaxed_accuracy")
	fs.IntVar(&o.limit, "limit", 0, "evaluate only the first N samples (0: all)")
	fs.StringVar(&o.protocols, "protocols", "P1,P2", "comma-separated protocols: P1 single turn, P2 context first, P3 follow-up")
	fs.StringVar(&o.policies, "policies", "full,vlcache,h2o,snapkv,streamingllm,pyramidkv,vlcache-scores,vlcache-budget", "comma-separated policies")
	fs.StringVar(&o.ratios, "keep-ratios", "1,0.2,0.1,0.05,0.02", "comma-separated keep ratios (fraction of the KV cache kept)")
	fs.StringVar(&o.budgetMode, "budget-mode", "", "vlcache layer budgets: exact or paper (empty: the backend's default)")
	fs.IntVar(&o.maxTokens, "max-tokens", 5, "new tokens at most per answer")
	fs.StringVar(&o.runner, "runner", "build/backend/tools/vlcache-run", "the engine runner binary (ignored with -gateway)")
	fs.StringVar(&o.runnerArgs, "runner-args", "", "extra arguments for the runner, space-separated")
	fs.StringVar(&o.runnerMode, "runner-mode", "batch", "batch: one runner process per batch of requests (the runner reads its whole input first); stream: one long-lived runner fed line by line")
	fs.IntVar(&o.batchSize, "batch-size", 160, "requests per runner process in batch mode")
	fs.IntVar(&o.runnerProcs, "runner-procs", 1, "batch mode: runner processes at once (give each fewer threads with -runner-args \"--threads N\")")
	fs.DurationVar(&o.flushDelay, "flush-delay", 200*time.Millisecond, "batch mode: a partial batch goes after this long without a new request")
	fs.StringVar(&o.gateway, "gateway", "", "base URL of a running gateway's OpenAI API (e.g. http://127.0.0.1:8080/v1); empty: the engine runner")
	fs.StringVar(&o.apiKey, "api-key", os.Getenv("VLCACHE_API_KEY"), "API key for the gateway (default $VLCACHE_API_KEY)")
	fs.StringVar(&o.servedModel, "served-model", "", "model name for the gateway (default: the model directory's base name)")
	fs.IntVar(&o.inflight, "inflight", 0, "requests in flight at once (0: the batch size in batch mode, else 8)")
	fs.IntVar(&o.sampleWorkers, "sample-workers", 0, "samples whose requests are issued at once (0: enough to fill -inflight)")
	fs.StringVar(&o.out, "out", "eval-results", "output directory: table.md, summary.json, predictions.jsonl, plots")
	fs.StringVar(&o.plotSample, "plot-sample", "", "sample id for the per-sample plots (default: the first sample)")
	fs.StringVar(&o.plotPolicies, "plot-policies", "vlcache,snapkv,streamingllm", "policies whose kept positions are plotted for the plot sample")
	fs.Float64Var(&o.plotRatio, "plot-ratio", 0.1, "keep ratio of the per-sample plots")
	fs.DurationVar(&o.progress, "progress", 5*time.Second, "progress line interval on stderr (0: off)")
	fs.BoolVar(&o.noPlots, "no-plots", false, "skip the plots")
	fs.BoolVar(&o.dedupeFull, "dedupe-full", true, "run policy full (ratio-independent) once per sample and protocol and report it at every ratio")
	fs.BoolVar(&o.checkReference, "check-reference", false, "fail unless policy full at keep ratio 1 matches every reference prediction")
	fs.StringVar(&o.from, "from", "", "draw the tables and plots of an earlier run's output directory again (no requests); writes to -out")
	fs.StringVar(&o.policyHeader, "policy-header", "backend/src/kvcache/policy.h", "engine header whose named policy constants are printed with the results (skipped when absent)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseRatios(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("keep ratio %q is not a number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Main runs the command; it is what the tests call.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ratios, err := parseRatios(o.ratios)
	if err != nil {
		return err
	}
	plotRatio := o.plotRatio
	if o.inflight == 0 {
		o.inflight = 8
		if o.gateway == "" && o.runnerMode == "batch" {
			o.inflight = o.batchSize * max(1, o.runnerProcs)
		}
	}
	if o.sampleWorkers == 0 {
		perSample := max(1, len(splitList(o.protocols))*len(splitList(o.policies))*len(splitList(o.ratios)))
		o.sampleWorkers = max(1, (o.inflight+perSample-1)/perSample)
	}
	cfg := eval.Config{
		Protocols: splitList(strings.ToUpper(o.protocols)), Policies: splitList(o.policies), KeepRatios: ratios,
		BudgetMode: o.budgetMode, MaxTokens: o.maxTokens, Inflight: o.inflight, SampleWorkers: o.sampleWorkers,
		PlotPolicies: splitList(o.plotPolicies), PlotRatio: plotRatio, Progress: stderr, ProgressTick: o.progress,
		DedupeFull: o.dedupeFull,
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if o.data == "" {
		o.data = filepath.Join(o.model, "eval", "eval.jsonl")
	}
	samples, err := eval.ReadJSONL(o.data, o.metric)
	if err != nil {
		return err
	}
	if o.limit > 0 && o.limit < len(samples) {
		samples = samples[:o.limit]
	}
	dataDir := filepath.Dir(o.data)
	if o.scenes == "" && exists(filepath.Join(dataDir, "scenes.jsonl")) {
		o.scenes = filepath.Join(dataDir, "scenes.jsonl")
	}
	followUps := 0
	if o.scenes != "" && o.scenes != "none" {
		scenes, err := eval.ReadScenes(o.scenes)
		if err != nil {
			return err
		}
		followUps = eval.AttachFollowUps(samples, scenes)
	} else {
		for _, s := range samples {
			if s.FollowUp != nil {
				followUps++
			}
		}
	}
	var reference map[string]string
	if o.reference == "" && exists(filepath.Join(dataDir, "predictions_full_cache.jsonl")) {
		o.reference = filepath.Join(dataDir, "predictions_full_cache.jsonl")
	}
	if o.reference != "" && o.reference != "none" {
		if reference, err = eval.ReadReference(o.reference); err != nil {
			return err
		}
	}
	if o.checkReference && reference == nil {
		return errors.New("-check-reference needs reference predictions")
	}
	cfg.PlotSample = o.plotSample
	if cfg.PlotSample == "" {
		cfg.PlotSample = samples[0].ID
	}
	if o.from != "" {
		return redraw(o, cfg, samples, reference, stdout, stderr)
	}

	var model *chat.Model
	var backend eval.Backend
	if o.gateway == "" || exists(o.model) {
		if model, err = chat.Load(o.model); err != nil {
			return fmt.Errorf("failed to load the model's chat template and tokenizer: %w", err)
		}
		if o.gateway == "" {
			if cfg.Processor, err = images.LoadProcessor(o.model); err != nil {
				return err
			}
		}
	}
	if o.gateway != "" {
		name := o.servedModel
		if name == "" {
			name = filepath.Base(filepath.Clean(o.model))
		}
		backend = eval.NewGateway(o.gateway, o.apiKey, name)
	} else {
		var killer interface{ Kill() }
		switch o.runnerMode {
		case "batch":
			bb, err := eval.NewBatchEngine(model, o.runner, o.model, strings.Fields(o.runnerArgs), o.batchSize, o.runnerProcs, o.flushDelay, stderr)
			if err != nil {
				return err
			}
			backend, killer = bb, bb
		case "stream":
			eb, err := eval.StartEngine(model, o.runner, o.model, strings.Fields(o.runnerArgs), stderr)
			if err != nil {
				return err
			}
			backend, killer = eb, eb
		default:
			return fmt.Errorf("-runner-mode %q is not batch or stream", o.runnerMode)
		}
		go func() {
			<-ctx.Done()
			killer.Kill()
		}()
	}
	defer backend.Close()

	settings := eval.BaseSettings(cfg, backend.Describe(), o.data, len(samples), followUps)
	if o.reference != "" && o.reference != "none" {
		settings = append(settings, eval.Setting{Name: "reference predictions", Value: o.reference})
	}
	if consts, err := eval.PolicyConstants(o.policyHeader); err == nil {
		settings = append(settings, consts...)
	}
	fmt.Fprintf(stderr, "[eval] %d samples, protocols %v, %d policies x %d keep ratios, backend: %s\n",
		len(samples), cfg.Protocols, len(cfg.Policies), len(cfg.KeepRatios), backend.Describe())

	res, runErr := eval.Run(ctx, backend, model, samples, cfg)
	if res == nil {
		return runErr
	}
	if runErr != nil {
		// Keep what finished: a partial table says more than none.
		fmt.Fprintf(stderr, "[eval] stopped early: %v; writing the %d predictions made\n", runErr, len(res.Predictions))
		done := map[string]bool{}
		for _, p := range res.Predictions {
			done[p.Sample] = true
		}
		settings = append(settings, eval.Setting{Name: "INCOMPLETE", Value: fmt.Sprintf(
			"stopped (%v) after %d of %d samples had all their requests answered; only those are counted", runErr, len(done), len(samples))})
	}
	sum := eval.Summarize(res, settings, reference)
	eval.WriteTable(stdout, cfg, sum)
	if err := eval.WriteOutputs(o.out, res, sum); err != nil {
		return fmt.Errorf("failed to write results: %w", err)
	}
	if !o.noPlots && len(res.Predictions) > 0 {
		files, err := eval.WritePlots(o.out, res, sum)
		if err != nil {
			return fmt.Errorf("failed to draw plots: %w", err)
		}
		fmt.Fprintf(stderr, "[eval] plots: %s\n", strings.Join(files, " "))
	}
	fmt.Fprintf(stderr, "[eval] results in %s (%.0f s)\n", o.out, res.Elapsed.Seconds())
	if runErr != nil {
		return runErr
	}
	errorsSeen := 0
	for _, p := range res.Predictions {
		if p.Error != "" {
			errorsSeen++
			if errorsSeen <= 3 {
				fmt.Fprintf(stderr, "[eval] failed: %s: %s\n", p.RequestID, p.Error)
			}
		}
	}
	if errorsSeen > 0 {
		return fmt.Errorf("%d requests failed (scored 0 in the tables)", errorsSeen)
	}
	if o.checkReference {
		checked := 0
		for _, d := range sum.Reference {
			if d.Policy != "full" {
				continue
			}
			checked++
			if d.Differ > 0 {
				return fmt.Errorf("%s full at keep ratio 1: %d of %d predictions differ from %s (ids %v)",
					d.Protocol, d.Differ, d.Compared, o.reference, d.DifferIDs)
			}
		}
		if checked == 0 {
			return errors.New("-check-reference: no full-policy predictions at keep ratio 1 to compare")
		}
	}
	return nil
}

// redraw summarises and plots an earlier run again (after a fix to the
// tables or plots, or for a run made on another machine).
func redraw(o *options, cfg eval.Config, samples []*eval.Sample, reference map[string]string, stdout, stderr io.Writer) error {
	res, settings, err := eval.LoadResults(o.from, samples)
	if err != nil {
		return err
	}
	cfg.Protocols, cfg.Policies, cfg.KeepRatios = res.Config.Protocols, res.Config.Policies, res.Config.KeepRatios
	res.Config = cfg
	if len(settings) > 0 && settings[len(settings)-1].Name != "redrawn from" {
		settings = append(settings, eval.Setting{Name: "redrawn from", Value: o.from})
	}
	sum := eval.Summarize(res, settings, reference)
	eval.WriteTable(stdout, cfg, sum)
	if err := eval.WriteOutputs(o.out, res, sum); err != nil {
		return err
	}
	if o.noPlots {
		return nil
	}
	files, err := eval.WritePlots(o.out, res, sum)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "[eval] redrawn %s into %s: %s\n", o.from, o.out, strings.Join(files, " "))
	return nil
}
