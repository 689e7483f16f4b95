package eval

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
)

// PolicyFull keeps the whole cache whatever the ratio.
const PolicyFull = "full"

// Protocols of docs/vlcache.md section 6.
const (
	ProtocolSingleTurn   = "P1" // images + question, compressed after the whole prompt
	ProtocolContextFirst = "P2" // compressed right after the last image token, question appended after
	ProtocolFollowUp     = "P3" // second question in a second turn, cache compressed after the first turn
)

// ProtocolDescriptions are printed with the results.
var ProtocolDescriptions = map[string]string{
	ProtocolSingleTurn:   "single turn: prompt = images + question; the cache is compressed after prefilling the whole prompt",
	ProtocolContextFirst: "context first: the cache is compressed right after the last image token; the rest of the prompt (question, assistant prefix) is appended to the compressed cache",
	ProtocolFollowUp:     "follow-up: turn 1 = images + question, answered by the model over its compressed cache (P1 at the same policy and ratio); turn 2 = another question about the same images, appended after the model's own first answer; the cache is compressed after the first turn's prompt; turn 2's answer is scored",
}

// Config says what to run.
type Config struct {
	Protocols     []string
	Policies      []string
	KeepRatios    []float64
	BudgetMode    string // "" = the backend's default
	MaxTokens     int
	Inflight      int // requests in flight at once
	SampleWorkers int // samples whose images are loaded at once
	// Processor resizes images for the engine runner as the gateway does;
	// nil: images are sent encoded (gateway backend).
	Processor *images.Processor
	// The sample, policies and ratio whose kept positions are asked for (plots).
	PlotSample   string
	PlotPolicies []string
	PlotRatio    float64
	Progress     io.Writer
	ProgressTick time.Duration
	// DedupeFull runs policy "full" (which keeps everything at any ratio)
	// once per sample and protocol and reports that result at every ratio.
	DedupeFull bool
}

// Prediction is one scored answer.
type Prediction struct {
	RequestID    string   `json:"request_id"`
	Sample       string   `json:"sample"`
	Protocol     string   `json:"protocol"`
	Policy       string   `json:"policy"`
	KeepRatio    float64  `json:"keep_ratio"`
	Type         string   `json:"type"`
	Metric       string   `json:"metric"`
	Question     string   `json:"question"`
	Answers      []string `json:"answers"`
	Prediction   string   `json:"prediction"`
	Score        float64  `json:"score"`
	FirstAnswer  string   `json:"first_answer,omitempty"` // P3: the model's own turn-1 answer
	OutputIDs    []int    `json:"output_ids,omitempty"`
	FinishReason string   `json:"finish_reason,omitempty"`
	PromptTokens int      `json:"prompt_tokens,omitempty"`
	KVBytesFull  int64    `json:"kv_bytes_full,omitempty"`
	KVBytesKept  int64    `json:"kv_bytes_kept,omitempty"`
	Error        string   `json:"error,omitempty"`
}

// Detail is the full stats of one request of the plot sample.
type Detail struct {
	Protocol  string  `json:"protocol"`
	Policy    string  `json:"policy"`
	KeepRatio float64 `json:"keep_ratio"`
	Stats     *Stats  `json:"stats"`
}

// PlotSample is what the per-sample plots need.
type PlotSample struct {
	Sample *Sample `json:"-"`
	ID     string  `json:"id"`
	// ImagePositions[i] = prompt positions of image i's tokens, per protocol
	// (the same for P1 and P2).
	ImagePositions [][]int  `json:"image_positions"`
	PromptTokens   int      `json:"prompt_tokens"`
	Details        []Detail `json:"details"`
}

// Results of one run.
type Results struct {
	Config      Config        `json:"-"`
	Samples     int           `json:"samples"`
	FollowUps   int           `json:"follow_ups"`
	Predictions []*Prediction `json:"predictions"`
	Plot        *PlotSample   `json:"plot_sample,omitempty"`
	Elapsed     time.Duration `json:"-"`
}

func requestID(sample, protocol, policy string, ratio float64) string {
	return fmt.Sprintf("%s-%s-%s-%g", sample, protocol, policy, ratio)
}

func (c *Config) has(protocol string) bool {
	for _, p := range c.Protocols {
		if p == protocol {
			return true
		}
	}
	return false
}

func (c *Config) plots(sampleID, policy string, ratio float64) bool {
	if sampleID != c.PlotSample || ratio != c.PlotRatio {
		return false
	}
	for _, p := range c.PlotPolicies {
		if p == policy {
			return true
		}
	}
	return false
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []string
	if len(c.Protocols) == 0 {
		errs = append(errs, "no protocol")
	}
	for _, p := range c.Protocols {
		if _, ok := ProtocolDescriptions[p]; !ok {
			errs = append(errs, fmt.Sprintf("protocol %q is not P1, P2 or P3", p))
		}
	}
	if len(c.Policies) == 0 {
		errs = append(errs, "no policy")
	}
	if len(c.KeepRatios) == 0 {
		errs = append(errs, "no keep ratio")
	}
	for _, r := range c.KeepRatios {
		if !(r > 0 && r <= 1) {
			errs = append(errs, fmt.Sprintf("keep ratio %g is not in (0, 1]", r))
		}
	}
	if c.MaxTokens < 1 {
		errs = append(errs, "max tokens must be at least 1")
	}
	if c.Inflight < 1 || c.SampleWorkers < 1 {
		errs = append(errs, "inflight and sample workers must be at least 1")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid evaluation settings: %s", strings.Join(errs, "; "))
	}
	return nil
}

// firstTurn is the user message of a sample's first question.
func firstTurn(s *Sample) chat.Message {
	parts := make([]chat.Part, 0, len(s.Images)+1)
	for range s.Images {
		parts = append(parts, chat.Part{Type: "image"})
	}
	parts = append(parts, chat.Part{Type: "text", Text: s.Question})
	return chat.Message{Role: "user", Parts: parts}
}

// Messages returns the conversation a protocol sends; firstAnswer is used by P3.
func Messages(s *Sample, protocol, firstAnswer string) []chat.Message {
	msgs := []chat.Message{firstTurn(s)}
	if protocol == ProtocolFollowUp {
		msgs = append(msgs,
			chat.Message{Role: "assistant", Text: firstAnswer},
			chat.Message{Role: "user", Text: s.FollowUp.Question})
	}
	return msgs
}

// CompressPoint is the chat package's compression point of a protocol.
func CompressPoint(protocol string) string {
	switch protocol {
	case ProtocolContextFirst:
		return chat.CompressAfterImages
	case ProtocolFollowUp:
		return chat.CompressAfterFirstTurn
	}
	return ""
}

// LoadImages reads a sample's images and, with a processor, converts them
// to RGB at the model's input size.
func LoadImages(ctx context.Context, s *Sample, proc *images.Processor) ([]*Image, error) {
	out := make([]*Image, len(s.Images))
	for i, ref := range s.Images {
		enc, err := ReadImageBytes(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", s.ID, err)
		}
		out[i] = &Image{Encoded: enc}
		if proc == nil {
			continue // the gateway decodes images itself
		}
		img, err := DecodeImage(enc)
		if err != nil {
			return nil, fmt.Errorf("sample %s image %d: %w", s.ID, i, err)
		}
		out[i].RGB, out[i].Height, out[i].Width = proc.Process(img)
	}
	return out, nil
}

type progress struct {
	total, done, errs atomic.Int64
}

// Run evaluates every sample under every protocol, policy and keep ratio.
// model is used only to locate image tokens for the plots (nil: no image grid).
func Run(ctx context.Context, backend Backend, model *chat.Model, samples []*Sample, cfg Config) (*Results, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	res := &Results{Config: cfg, Samples: len(samples)}
	var p progress
	perSample := 0
	runs := len(cfg.Policies) * len(cfg.KeepRatios) // requests per protocol and sample
	if cfg.DedupeFull && len(cfg.KeepRatios) > 1 {
		for _, pol := range cfg.Policies {
			if pol == PolicyFull {
				runs -= len(cfg.KeepRatios) - 1
			}
		}
	}
	for _, proto := range cfg.Protocols {
		perSample += runs
		if proto == ProtocolFollowUp && !cfg.has(ProtocolSingleTurn) {
			perSample += runs // turn 1 is run on its own
		}
	}
	for _, s := range samples {
		if s.FollowUp != nil {
			res.FollowUps++
		}
	}
	p.total.Store(int64(perSample * len(samples)))
	if !cfg.has(ProtocolFollowUp) {
		res.FollowUps = 0
	}

	start := time.Now()
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if cfg.Progress != nil && cfg.ProgressTick > 0 {
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			t := time.NewTicker(cfg.ProgressTick)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					printProgress(cfg.Progress, &p, start)
				case <-stopProgress:
					printProgress(cfg.Progress, &p, start)
					return
				}
			}
		}()
	}

	var mu sync.Mutex
	sem := make(chan struct{}, cfg.Inflight)
	work := make(chan *Sample)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for w := 0; w < cfg.SampleWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				preds, plot, err := runSample(ctx, backend, model, s, &cfg, sem, &p)
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				res.Predictions = append(res.Predictions, preds...)
				if plot != nil {
					res.Plot = plot
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, s := range samples {
		select {
		case work <- s:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(stopProgress)
	progressDone.Wait()
	res.Elapsed = time.Since(start)
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	sortPredictions(res.Predictions, samples, &cfg)
	return res, nil
}

func printProgress(w io.Writer, p *progress, start time.Time) {
	done, total := p.done.Load(), p.total.Load()
	el := time.Since(start)
	rate := float64(done) / el.Seconds()
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(total-done)/rate) * time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(w, "[eval] %d/%d requests (%.1f%%), %.2f req/s, elapsed %s, eta %s, errors %d\n",
		done, total, 100*float64(done)/float64(max(total, 1)), rate, el.Round(time.Second), eta, p.errs.Load())
}

type job struct {
	protocol string
	policy   string
	ratio    float64
	record   bool // false: a P3 first turn run only to get the model's answer
}

// runSample runs one sample's requests: first P1/P2 (and P3's first turns),
// then the P3 second turns that need the first answers.
func runSample(ctx context.Context, backend Backend, model *chat.Model, s *Sample, cfg *Config, sem chan struct{}, p *progress) ([]*Prediction, *PlotSample, error) {
	images, err := LoadImages(ctx, s, cfg.Processor)
	if err != nil {
		return nil, nil, err
	}
	var plot *PlotSample
	if s.ID == cfg.PlotSample {
		plot = &PlotSample{Sample: s, ID: s.ID}
		if model != nil {
			if pr, err := model.Build(Messages(s, ProtocolSingleTurn, ""), len(images), ""); err == nil {
				plot.ImagePositions = imagePositions(pr.IDs, model.ImageTokenID, model.TokensPerImage)
				plot.PromptTokens = len(pr.IDs)
			}
		}
	}
	var phase1 []job
	wantP3 := cfg.has(ProtocolFollowUp) && s.FollowUp != nil
	for _, proto := range []string{ProtocolSingleTurn, ProtocolContextFirst} {
		for _, pol := range cfg.Policies {
			for _, r := range cfg.KeepRatios {
				if cfg.has(proto) {
					phase1 = append(phase1, job{proto, pol, r, true})
				} else if proto == ProtocolSingleTurn && wantP3 {
					phase1 = append(phase1, job{proto, pol, r, false})
				}
			}
		}
	}
	if cfg.has(ProtocolFollowUp) && s.FollowUp == nil {
		// No follow-up question: its P3 requests are not run (counted in the total).
		n := int64(len(cfg.Policies) * len(cfg.KeepRatios))
		if cfg.DedupeFull {
			n = 0
			for _, pol := range cfg.Policies {
				if pol == PolicyFull {
					n++
				} else {
					n += int64(len(cfg.KeepRatios))
				}
			}
		}
		if !cfg.has(ProtocolSingleTurn) {
			n *= 2
		}
		p.total.Add(-n)
	}
	// With DedupeFull, "full" runs at the first ratio only; copies follow.
	skip := func(j job) bool { return cfg.DedupeFull && j.policy == PolicyFull && j.ratio != cfg.KeepRatios[0] }
	var mu sync.Mutex
	var preds []*Prediction
	firstAnswers := map[string]string{}
	runJobs := func(jobs []job) {
		var wg sync.WaitGroup
		for _, j := range jobs {
			if skip(j) {
				continue
			}
			wg.Add(1)
			go func(j job) {
				defer wg.Done()
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-sem }()
				pred, stats := runOne(ctx, backend, s, images, cfg, j, firstAnswers, &mu)
				p.done.Add(1)
				if pred.Error != "" {
					p.errs.Add(1)
				}
				mu.Lock()
				defer mu.Unlock()
				// The same result stands for every ratio a skipped "full" job had.
				for _, r := range cfg.KeepRatios {
					if r != j.ratio && !(skip(job{j.protocol, j.policy, r, j.record}) && j.ratio == cfg.KeepRatios[0]) {
						continue
					}
					pr := pred
					if r != j.ratio {
						cp := *pred
						cp.KeepRatio, cp.RequestID = r, requestID(s.ID, j.protocol, j.policy, r)+"-copy"
						pr = &cp
					}
					if j.protocol == ProtocolSingleTurn {
						firstAnswers[fmt.Sprintf("%s-%g", j.policy, r)] = strings.TrimSpace(pr.Prediction)
					}
					if j.record {
						preds = append(preds, pr)
					}
					if plot != nil && stats != nil && j.record {
						plot.Details = append(plot.Details, Detail{Protocol: j.protocol, Policy: j.policy, KeepRatio: r, Stats: stats})
					}
				}
			}(j)
		}
		wg.Wait()
	}
	runJobs(phase1)
	if wantP3 {
		var phase2 []job
		for _, pol := range cfg.Policies {
			for _, r := range cfg.KeepRatios {
				phase2 = append(phase2, job{ProtocolFollowUp, pol, r, true})
			}
		}
		runJobs(phase2)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return preds, plot, nil
}

func runOne(ctx context.Context, backend Backend, s *Sample, images []*Image, cfg *Config, j job, firstAnswers map[string]string, mu *sync.Mutex) (*Prediction, *Stats) {
	pred := &Prediction{
		RequestID: requestID(s.ID, j.protocol, j.policy, j.ratio), Sample: s.ID, Protocol: j.protocol,
		Policy: j.policy, KeepRatio: j.ratio, Type: s.Type, Metric: s.Metric, Question: s.Question, Answers: s.Answers,
	}
	if !j.record {
		pred.RequestID += "-turn1"
	}
	first := ""
	if j.protocol == ProtocolFollowUp {
		mu.Lock()
		first = firstAnswers[fmt.Sprintf("%s-%g", j.policy, j.ratio)]
		mu.Unlock()
		pred.FirstAnswer = first
		pred.Question = s.FollowUp.Question
		pred.Answers = s.FollowUp.Answers
		pred.Type = s.FollowUp.Type
	}
	req := &Request{
		ID: pred.RequestID, Messages: Messages(s, j.protocol, first), Images: images,
		CompressAfter: CompressPoint(j.protocol), Policy: j.policy, KeepRatio: j.ratio,
		BudgetMode: cfg.BudgetMode, MaxTokens: cfg.MaxTokens,
		ReturnKept: j.record && cfg.plots(s.ID, j.policy, j.ratio),
	}
	resp, err := backend.Generate(ctx, req)
	if err != nil {
		pred.Error = err.Error()
		return pred, nil
	}
	pred.Prediction = strings.TrimSpace(resp.Text)
	pred.OutputIDs = resp.OutputIDs
	pred.FinishReason = resp.FinishReason
	if resp.Stats != nil {
		pred.PromptTokens = resp.Stats.PromptTokens
		pred.KVBytesFull = resp.Stats.KVBytesFull
		pred.KVBytesKept = resp.Stats.KVBytesKept
	}
	score, err := Score(pred.Metric, pred.Prediction, pred.Answers)
	if err != nil {
		pred.Error = err.Error()
	}
	pred.Score = score
	if s.ID == cfg.PlotSample {
		return pred, resp.Stats
	}
	return pred, nil
}

// imagePositions groups the prompt positions of image tokens per image.
func imagePositions(ids []int, imageTokenID, perImage int) [][]int {
	var out [][]int
	var cur []int
	for i, id := range ids {
		if id != imageTokenID {
			continue
		}
		cur = append(cur, i)
		if len(cur) == perImage {
			out = append(out, cur)
			cur = nil
		}
	}
	return out
}
