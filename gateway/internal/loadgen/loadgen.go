// Package loadgen drives concurrent streaming requests with images through
// the gateway (OpenAI API) and, in the same run, the same requests straight
// to tritonserver over gRPC, and reports latency percentiles, throughput,
// errors and the backend's KV-cache bytes per keep ratio.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/eval"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

// Target names.
const (
	TargetGateway = "gateway"
	TargetTriton  = "triton"
)

// Item is one prepared request: the gateway's view (messages and encoded
// images) and Triton's (ids and RGB), built the way the gateway builds them.
type Item struct {
	Sample    *eval.Sample
	Request   *eval.Request
	InputIDs  []int32
	RGBImages []triton.Image
}

// Prepare builds the request of each sample (its first `frames` images and
// its question) for both targets.
func Prepare(ctx context.Context, model *chat.Model, proc *images.Processor, samples []*eval.Sample, frames int) ([]*Item, error) {
	var out []*Item
	for _, s := range samples {
		s2 := *s
		if frames > 0 && frames < len(s2.Images) {
			s2.Images = s2.Images[:frames]
		}
		imgs, err := eval.LoadImages(ctx, &s2, proc)
		if err != nil {
			return nil, err
		}
		req := &eval.Request{Messages: eval.Messages(&s2, eval.ProtocolSingleTurn, ""), Images: imgs}
		p, err := model.Build(req.Messages, len(imgs), "")
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", s.ID, err)
		}
		it := &Item{Sample: &s2, Request: req, InputIDs: make([]int32, len(p.IDs))}
		for i, id := range p.IDs {
			it.InputIDs[i] = int32(id)
		}
		for _, im := range imgs {
			it.RGBImages = append(it.RGBImages, triton.Image{Height: im.Height, Width: im.Width, RGB: im.RGB})
		}
		out = append(out, it)
	}
	return out, nil
}

// Config of one load run.
type Config struct {
	Targets  []string
	Clients  int // concurrent streams per target
	Requests int // requests per target
	// Rounds splits each target's requests into this many turns, the targets
	// alternating, so that a change in the machine's load hits both alike.
	Rounds       int
	MaxDuration  time.Duration // per target; requests not started by then are skipped
	KeepRatios   []float64     // request i uses KeepRatios[i % len]
	Policy       string
	MaxTokens    int
	Temperature  float64
	ServedModel  string // gateway model name
	TritonModel  string
	Progress     io.Writer
	ProgressTick time.Duration
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Clients < 1 || c.Requests < 1 {
		errs = append(errs, errors.New("clients and requests must be at least 1"))
	}
	if len(c.KeepRatios) == 0 {
		errs = append(errs, errors.New("no keep ratio"))
	}
	for _, r := range c.KeepRatios {
		if !(r > 0 && r <= 1) {
			errs = append(errs, fmt.Errorf("keep ratio %g is not in (0, 1]", r))
		}
	}
	if c.MaxTokens < 1 {
		errs = append(errs, errors.New("max tokens must be at least 1"))
	}
	for _, t := range c.Targets {
		if t != TargetGateway && t != TargetTriton {
			errs = append(errs, fmt.Errorf("target %q is not gateway or triton", t))
		}
	}
	if len(c.Targets) == 0 {
		errs = append(errs, errors.New("no target"))
	}
	return errors.Join(errs...)
}

// Sample is one measured request.
type Sample struct {
	Target           string    `json:"target"`
	KeepRatio        float64   `json:"keep_ratio"`
	StartS           float64   `json:"start_s"` // since the target's phase began
	TTFTMs           float64   `json:"ttft_ms"`
	E2EMs            float64   `json:"e2e_ms"`
	ITLMs            []float64 `json:"itl_ms,omitempty"` // gaps between streamed tokens
	CompletionTokens int       `json:"completion_tokens"`
	PromptTokens     int       `json:"prompt_tokens"`
	KVBytesFull      int64     `json:"kv_bytes_full"`
	KVBytesKept      int64     `json:"kv_bytes_kept"`
	FinishReason     string    `json:"finish_reason,omitempty"`
	Error            string    `json:"error,omitempty"`
}

// Phase is one target's run.
type Phase struct {
	Target   string    `json:"target"`
	WallS    float64   `json:"wall_s"`  // summed over the rounds
	Skipped  int       `json:"skipped"` // not started before MaxDuration
	Requests []*Sample `json:"requests"`
}

// Sender sends one request to one target and measures it.
type Sender interface {
	Send(ctx context.Context, it *Item, keepRatio float64) *Sample
}

// Run sends cfg.Requests requests to each target with cfg.Clients
// concurrent streams, items and keep ratios taken round-robin.
func Run(ctx context.Context, cfg Config, items []*Item, senders map[string]Sender) ([]*Phase, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, errors.New("no requests to send")
	}
	rounds := max(1, min(cfg.Rounds, cfg.Requests))
	phases := make([]*Phase, len(cfg.Targets))
	deadlines := make([]time.Time, len(cfg.Targets))
	for i, target := range cfg.Targets {
		if senders[target] == nil {
			return nil, fmt.Errorf("no sender for target %s", target)
		}
		phases[i] = &Phase{Target: target}
	}
	for r := 0; r < rounds; r++ {
		// Request indices [lo, hi) of this round, the same for every target.
		lo, hi := cfg.Requests*r/rounds, cfg.Requests*(r+1)/rounds
		for i, target := range cfg.Targets {
			if r == 0 && cfg.MaxDuration > 0 {
				deadlines[i] = time.Now().Add(cfg.MaxDuration)
			}
			runPhase(ctx, cfg, target, senders[target], items, lo, hi, deadlines[i], phases[i])
			if err := ctx.Err(); err != nil {
				return phases, err
			}
		}
	}
	for _, ph := range phases {
		ph.Skipped = cfg.Requests - len(ph.Requests)
	}
	return phases, nil
}

// runPhase sends requests [lo, hi) to one target and adds them to ph.
func runPhase(ctx context.Context, cfg Config, target string, s Sender, items []*Item, lo, hi int, deadline time.Time, ph *Phase) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !deadline.IsZero() {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, deadline)
		defer c2()
	}
	var next, done atomic.Int64
	next.Store(int64(lo))
	var mu sync.Mutex
	start := time.Now()
	stop := make(chan struct{})
	var tick sync.WaitGroup
	if cfg.Progress != nil && cfg.ProgressTick > 0 {
		tick.Add(1)
		go func() {
			defer tick.Done()
			t := time.NewTicker(cfg.ProgressTick)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					fmt.Fprintf(cfg.Progress, "[loadgen] %s: %d/%d requests of this round, %s\n", target, done.Load(), hi-lo, time.Since(start).Round(time.Second))
				case <-stop:
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= hi || ctx.Err() != nil {
					return
				}
				ratio := cfg.KeepRatios[i%len(cfg.KeepRatios)]
				t0 := time.Since(start)
				smp := s.Send(ctx, items[i%len(items)], ratio)
				smp.Target, smp.KeepRatio, smp.StartS = target, ratio, t0.Seconds()
				done.Add(1)
				mu.Lock()
				ph.Requests = append(ph.Requests, smp)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	tick.Wait()
	ph.WallS += time.Since(start).Seconds()
}

// GatewaySender streams chat completions through the OpenAI SDK.
type GatewaySender struct {
	Client      openai.Client
	Model       string
	Policy      string
	MaxTokens   int
	Temperature float64
	IgnoreEOS   bool // the ignore_eos extension: every request runs to MaxTokens
}

// NewGatewaySender makes a sender for baseURL (…/v1).
func NewGatewaySender(baseURL, apiKey, model, policy string, maxTokens int, temperature float64) *GatewaySender {
	if apiKey == "" {
		apiKey = "unused"
	}
	return &GatewaySender{
		Client: openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(apiKey), option.WithMaxRetries(0)),
		Model:  model, Policy: policy, MaxTokens: maxTokens, Temperature: temperature,
	}
}

// Send streams one request and times its tokens.
func (g *GatewaySender) Send(ctx context.Context, it *Item, keepRatio float64) *Sample {
	smp := &Sample{}
	req := *it.Request
	req.KeepRatio, req.Policy, req.MaxTokens = keepRatio, g.Policy, g.MaxTokens
	params, opts, err := eval.ChatParams(g.Model, &req)
	if err != nil {
		smp.Error = err.Error()
		return smp
	}
	params.Temperature = openai.Float(g.Temperature)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	if g.IgnoreEOS {
		opts = append(opts, option.WithJSONSet("ignore_eos", true))
	}
	t0 := time.Now()
	last := t0
	stream := g.Client.Chat.Completions.NewStreaming(ctx, params, opts...)
	defer stream.Close()
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		now := time.Now()
		if len(ch.Choices) > 0 {
			if ch.Choices[0].Delta.Content != "" {
				if chunks == 0 {
					smp.TTFTMs = ms(now.Sub(t0))
				} else {
					smp.ITLMs = append(smp.ITLMs, ms(now.Sub(last)))
				}
				chunks++
				last = now
			}
			if ch.Choices[0].FinishReason != "" {
				smp.FinishReason = ch.Choices[0].FinishReason
			}
		}
		if raw := ch.Usage.RawJSON(); raw != "" && raw != "null" {
			if st := eval.KVStatsFromUsage(raw); st != nil {
				smp.KVBytesFull, smp.KVBytesKept = st.KVBytesFull, st.KVBytesKept
			}
			smp.CompletionTokens = int(ch.Usage.CompletionTokens)
			smp.PromptTokens = int(ch.Usage.PromptTokens)
		}
	}
	smp.E2EMs = ms(time.Since(t0))
	if err := stream.Err(); err != nil {
		smp.Error = err.Error()
	}
	return smp
}

// TritonSender sends the same requests straight to tritonserver.
type TritonSender struct {
	Client      *triton.Client
	Model       string
	Policy      string
	MaxTokens   int
	Temperature float64
	IgnoreEOS   bool
	seq         atomic.Int64
}

// Send streams one request over gRPC and times its tokens.
func (t *TritonSender) Send(ctx context.Context, it *Item, keepRatio float64) *Sample {
	smp := &Sample{}
	req := triton.Request{
		Model: t.Model, ID: "loadgen-" + strconv.FormatInt(t.seq.Add(1), 10), InputIDs: it.InputIDs, Images: it.RGBImages,
		MaxTokens: int32(t.MaxTokens), Temperature: float32(t.Temperature), TopP: 1,
		KeepRatio: float32(keepRatio), Policy: t.Policy, IgnoreEOS: t.IgnoreEOS,
	}
	t0 := time.Now()
	last := t0
	tokens := 0
	err := t.Client.Generate(ctx, req, func(c triton.Chunk) error {
		now := time.Now()
		if n := len(c.OutputIDs); n > 0 {
			if tokens == 0 {
				smp.TTFTMs = ms(now.Sub(t0))
			} else {
				// Several tokens in one response share its gap.
				gap := ms(now.Sub(last)) / float64(n)
				for k := 0; k < n; k++ {
					smp.ITLMs = append(smp.ITLMs, gap)
				}
			}
			tokens += n
			last = now
		}
		if c.Final {
			smp.FinishReason = c.FinishReason
			if c.Stats != nil {
				smp.KVBytesFull, smp.KVBytesKept = c.Stats.KVBytesFull, c.Stats.KVBytesKept
				smp.PromptTokens = c.Stats.PromptTokens
			}
		}
		return nil
	})
	smp.E2EMs = ms(time.Since(t0))
	smp.CompletionTokens = tokens
	if err != nil {
		smp.Error = err.Error()
	}
	return smp
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
