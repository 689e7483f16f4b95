package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/openai"
	"github.com/vlcache/vlcache/gateway/internal/telemetry"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

// errStopped ends generation early when a stop string was found.
var errStopped = errors.New("stop string reached")

// job is one admitted chat request on its way through the backend.
type job struct {
	id       string
	created  int64
	model    *Model
	req      *openai.ChatCompletionRequest
	prompt   *chat.Prompt
	grant    admission.Grant
	kv       admission.KVSetting
	treq     triton.Request
	usage    admission.Usage
	finishMu sync.Once
}

func (j *job) finish(ctx context.Context, status int) {
	j.finishMu.Do(func() {
		j.usage.Status = status
		j.grant.Finish(context.WithoutCancel(ctx), j.usage)
	})
}

func bearer(c *gin.Context) string {
	h := c.GetHeader("Authorization")
	if k, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(k)
	}
	return ""
}

func (s *Server) chatCompletions(c *gin.Context) {
	ctx := c.Request.Context()
	// Requests by status and end-to-end latency, refusals included; the labels
	// are filled in as they become known (telemetry folds unknown ones).
	received, modelLabel, tenantLabel := time.Now(), "", ""
	defer func() { s.opt.Metrics.ObserveRequest(modelLabel, tenantLabel, c.Writer.Status(), time.Since(received)) }()
	if s.opt.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opt.RequestTimeout)
		defer cancel()
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.opt.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(c, &openai.APIError{Status: 413, Type: "invalid_request_error", Code: "request_too_large",
				Message: fmt.Sprintf("the request body is over %d bytes", s.opt.MaxBodyBytes)})
			return
		}
		s.writeError(c, &openai.APIError{Status: 400, Type: "invalid_request_error", Message: "failed to read the request body"})
		return
	}
	req, err := openai.ParseChatRequest(body)
	if err != nil {
		s.writeError(c, err)
		return
	}
	kvReq, err := openai.KVRequest(c.GetHeader(openai.HeaderKVRatio), c.GetHeader(openai.HeaderKVPolicy), req.KVCache)
	if err != nil {
		s.writeError(c, err)
		return
	}
	modelLabel = req.Model
	defer s.opt.Metrics.InFlight(req.Model)()
	model, ok := s.models[req.Model]
	if !ok {
		s.writeError(c, modelNotFound(req.Model))
		return
	}
	actx, span := telemetry.Start(ctx, telemetry.SpanAuth)
	grant, err := s.opt.Admitter.Admit(actx, admission.Request{APIKey: bearer(c), Model: req.Model, Requested: kvReq})
	telemetry.End(span, err)
	if err != nil {
		if ae := (*admission.Error)(nil); errors.As(err, &ae) {
			tenantLabel = ae.Tenant
		}
		s.writeError(c, err)
		return
	}
	tenantLabel = grant.Tenant()
	j := &job{id: "chatcmpl-" + strings.TrimPrefix(c.GetString(requestIDKey), "req-"), created: time.Now().Unix(),
		model: model, req: req, grant: grant, kv: grant.KV()}
	status := http.StatusInternalServerError
	defer func() { j.finish(ctx, status) }() // exactly once, also on a panic
	copyHeader(c, grant.Header())

	if err := s.prepare(ctx, c, j); err != nil {
		status = s.writeError(c, err).Status
		return
	}
	copyHeader(c, grant.Header())
	c.Header(openai.HeaderKVRatio, strconv.FormatFloat(j.kv.KeepRatio, 'g', -1, 64))
	c.Header(openai.HeaderKVPolicy, j.kv.Policy)
	if req.Stream {
		status = s.stream(ctx, c, j)
	} else {
		status = s.complete(ctx, c, j)
	}
	if s.opt.Metrics != nil {
		s.opt.Metrics.AddTokens(model.Name, grant.Tenant(), j.usage.PromptTokens, j.usage.ImageTokens, j.usage.CompletionTokens)
		s.opt.Metrics.AddKV(model.Name, grant.Tenant(), j.usage.KVBytesFull, j.usage.KVBytesKept, j.kv.KeepRatio)
	}
}

func copyHeader(c *gin.Context, h http.Header) {
	for k, vs := range h {
		c.Writer.Header().Del(k)
		for _, v := range vs {
			c.Writer.Header().Add(k, v)
		}
	}
}

// prepare loads the images, builds the prompt, charges it and fills treq.
func (s *Server) prepare(ctx context.Context, c *gin.Context, j *job) error {
	msgs, refs := toChat(j.req.Messages)
	if len(refs) > s.opt.MaxImages {
		return &openai.APIError{Status: 400, Type: "invalid_request_error", Param: "messages",
			Message: fmt.Sprintf("the request has %d images; at most %d are allowed", len(refs), s.opt.MaxImages)}
	}
	if len(refs) > 0 && j.model.Images == nil {
		return &openai.APIError{Status: 400, Type: "invalid_request_error", Param: refs[0].param,
			Message: fmt.Sprintf("model %q does not take images", j.model.Name)}
	}
	ictx, span := telemetry.Start(ctx, telemetry.SpanImageFetch)
	imgs, err := s.loadImages(ictx, j.model, refs)
	telemetry.End(span, err)
	if err != nil {
		return err
	}
	compress, budget := "", ""
	if kv := j.req.KVCache; kv != nil {
		compress, budget = kv.CompressAfter, kv.BudgetMode
	}
	_, span = telemetry.Start(ctx, telemetry.SpanTokenize)
	prompt, err := j.model.Chat.Build(msgs, len(imgs), compress)
	telemetry.End(span, err)
	if err != nil {
		return err
	}
	j.prompt = prompt
	maxTokens := s.opt.DefaultMaxTokens
	asked := j.req.EffectiveMaxTokens()
	if asked != nil {
		maxTokens = *asked
	}
	if limit := j.model.Chat.ContextLength; limit > 0 {
		room := limit - len(prompt.IDs)
		if room < 1 {
			return &openai.APIError{Status: 400, Type: "invalid_request_error", Param: "messages", Code: "context_length_exceeded",
				Message: fmt.Sprintf("the prompt is %d tokens (images included); the model's context is %d", len(prompt.IDs), limit)}
		}
		if maxTokens > room {
			if asked != nil {
				return &openai.APIError{Status: 400, Type: "invalid_request_error", Param: "max_tokens", Code: "context_length_exceeded",
					Message: fmt.Sprintf("the prompt is %d tokens and max_tokens is %d; together they exceed the model's context of %d", len(prompt.IDs), maxTokens, limit)}
			}
			maxTokens = room
		}
	}
	j.usage.PromptTokens, j.usage.ImageTokens = len(prompt.IDs), prompt.ImageTokens
	cctx, span := telemetry.Start(ctx, telemetry.SpanChargePrompt)
	err = j.grant.ChargePrompt(cctx, len(prompt.IDs))
	telemetry.End(span, err)
	if err != nil {
		return err
	}
	ids := make([]int32, len(prompt.IDs))
	for i, id := range prompt.IDs {
		ids[i] = int32(id)
	}
	r := j.req
	j.treq = triton.Request{
		Model: j.model.TritonModel, ID: c.GetString(requestIDKey), InputIDs: ids, Images: imgs,
		MaxTokens: int32(maxTokens), TopP: 1, KeepRatio: float32(j.kv.KeepRatio), Policy: j.kv.Policy,
		BudgetMode: budget, CompressAfter: int32(prompt.CompressAfter), IgnoreEOS: r.IgnoreEOS,
	}
	if r.Temperature != nil {
		j.treq.Temperature = float32(*r.Temperature)
	}
	if r.TopP != nil {
		j.treq.TopP = float32(*r.TopP)
	}
	if r.TopK != nil {
		j.treq.TopK = int32(*r.TopK)
	}
	if r.Seed != nil {
		j.treq.Seed = uint64(*r.Seed)
	}
	return nil
}

type imageRef struct {
	url   string
	param string
}

// toChat converts OpenAI messages to template messages and lists the images
// in prompt order, each with the parameter path that names it in errors.
func toChat(msgs []openai.Message) ([]chat.Message, []imageRef) {
	out := make([]chat.Message, len(msgs))
	var refs []imageRef
	for i, m := range msgs {
		cm := chat.Message{Role: m.Role}
		if !m.IsParts {
			cm.Text = *m.Text
		} else {
			cm.Parts = []chat.Part{}
			for j, p := range m.Parts {
				if p.Type == "image_url" {
					cm.Parts = append(cm.Parts, chat.Part{Type: "image"})
					refs = append(refs, imageRef{url: p.ImageURL.URL, param: fmt.Sprintf("messages[%d].content[%d]", i, j)})
				} else {
					cm.Parts = append(cm.Parts, chat.Part{Type: "text", Text: p.Text})
				}
			}
		}
		out[i] = cm
	}
	return out, refs
}

// loadImages fetches and decodes the images concurrently and resizes them.
func (s *Server) loadImages(ctx context.Context, m *Model, refs []imageRef) ([]triton.Image, error) {
	out := make([]triton.Image, len(refs))
	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := s.opt.Images.Load(ctx, ref.url)
			if err != nil {
				errs[i] = &images.Error{Param: ref.param, Err: err}
				return
			}
			_, pspan := telemetry.Start(ctx, telemetry.SpanPreprocess)
			rgb, h, w := m.Images.Process(img)
			telemetry.End(pspan, nil)
			out[i] = triton.Image{Height: h, Width: w, RGB: rgb}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// generation is the outcome of running a job.
type generation struct {
	finishReason string
	stats        *triton.Stats
	tokens       int
}

// run streams the job through the generator, turning ids into UTF-8-safe
// text and cutting at stop strings; onText gets each piece of text, onFirst
// is called when the backend first answers.
func (s *Server) run(ctx context.Context, j *job, onFirst func() error, onText func(string) error) (generation, error) {
	var g generation
	dec := j.model.Chat.Tok.NewStreamDecoder(true)
	stops := chat.NewStopMatcher(j.req.Stop)
	first := true
	sctx, stream := telemetry.StartStream(ctx, j.model.Name)
	start := time.Now()
	last := start
	err := s.opt.Generator.Generate(sctx, j.treq, func(ch triton.Chunk) error {
		if n := len(ch.OutputIDs); n > 0 {
			// Inter-token latency: the gap since the previous tokens, spread over
			// the tokens of this response (the backend may batch several).
			now := time.Now()
			if g.tokens > 0 {
				for range n {
					s.opt.Metrics.ObserveInterToken(j.model.Name, j.grant.Tenant(), now.Sub(last)/time.Duration(n))
				}
			}
			last = now
		}
		if first {
			first = false
			if s.opt.Metrics != nil {
				s.opt.Metrics.ObserveTTFT(j.model.Name, j.grant.Tenant(), time.Since(start))
			}
			if err := onFirst(); err != nil {
				return err
			}
		}
		stream.Tokens(len(ch.OutputIDs))
		ids := make([]int, len(ch.OutputIDs))
		for i, id := range ch.OutputIDs {
			ids[i] = int(id)
		}
		g.tokens += len(ids)
		// The first response carries the stats as known after compression, so
		// a stop-string stop (which cancels the stream) still reports the KV
		// figures; the final response's stats replace them when it comes.
		if ch.Stats != nil {
			g.stats = ch.Stats
		}
		text := dec.Add(ids)
		if ch.Final {
			text += dec.Flush()
		}
		emit, stopped := stops.Push(text)
		if ch.Final && !stopped {
			emit += stops.Flush()
		}
		if emit != "" {
			if err := onText(emit); err != nil {
				return err
			}
		}
		if stopped {
			g.finishReason = "stop"
			return errStopped
		}
		if ch.Final {
			g.finishReason = ch.FinishReason
		}
		return nil
	})
	if errors.Is(err, errStopped) {
		err = nil
	}
	if err == nil {
		switch g.finishReason {
		case "stop", "length":
		case "cancelled":
			err = context.Canceled
		case "error":
			msg := "generation failed"
			if g.stats != nil && g.stats.Error != "" {
				msg = g.stats.Error
			}
			err = &triton.BackendError{Message: msg}
		default:
			err = &triton.BackendError{Message: fmt.Sprintf("unknown finish_reason %q", g.finishReason)}
		}
	}
	stream.End(g.finishReason, err)
	j.usage.CompletionTokens = g.tokens
	if st := g.stats; st != nil {
		if st.CompletionTokens > 0 {
			j.usage.CompletionTokens = st.CompletionTokens
		}
		j.usage.KVTokensFull, j.usage.KVTokensKept = st.KVTokensFull, st.KVTokensKept
		j.usage.KVBytesFull, j.usage.KVBytesKept = st.KVBytesFull, st.KVBytesKept
	}
	return g, err
}

func (j *job) openaiUsage(g generation) *openai.Usage {
	u := &openai.Usage{
		PromptTokens:        j.usage.PromptTokens,
		CompletionTokens:    j.usage.CompletionTokens,
		TotalTokens:         j.usage.PromptTokens + j.usage.CompletionTokens,
		PromptTokensDetails: &openai.PromptTokensDetails{ImageTokens: j.usage.ImageTokens},
		// The applied ratio as admitted: the backend's copy went through float32.
		KVCache: &openai.KVCacheUsage{Policy: j.kv.Policy, KeepRatio: j.kv.KeepRatio},
	}
	if st := g.stats; st != nil {
		if st.Policy != "" {
			u.KVCache.Policy = st.Policy
		}
		u.KVCache.TokensFull, u.KVCache.TokensKept = st.KVTokensFull, st.KVTokensKept
		u.KVCache.BytesFull, u.KVCache.BytesKept = st.KVBytesFull, st.KVBytesKept
	}
	return u
}

func (s *Server) complete(ctx context.Context, c *gin.Context, j *job) int {
	var text strings.Builder
	g, err := s.run(ctx, j, func() error { return nil }, func(t string) error { text.WriteString(t); return nil })
	if err != nil {
		return s.writeError(c, err).Status
	}
	c.JSON(http.StatusOK, openai.ChatCompletion{
		ID: j.id, Object: "chat.completion", Created: j.created, Model: j.model.Name,
		Choices: []openai.Choice{{Message: openai.ResponseMessage{Role: "assistant", Content: text.String()}, FinishReason: g.finishReason}},
		Usage:   j.openaiUsage(g),
	})
	return http.StatusOK
}

func (s *Server) stream(ctx context.Context, c *gin.Context, j *job) int {
	w := &sseWriter{w: c.Writer}
	base := openai.NewChunk(j.id, j.model.Name, j.created)
	g, err := s.run(ctx, j,
		func() error { return w.event(openai.RoleChunk(base)) },
		func(t string) error { return w.event(openai.ContentChunk(base, t)) })
	if err != nil {
		if !w.started {
			return s.writeError(c, err).Status
		}
		api := openai.FromError(err)
		if api.Status != openai.StatusClientClosed {
			s.log(c).Warn("stream failed", "status", api.Status, "error", err)
			_ = w.event(api.Body())
		}
		return http.StatusOK
	}
	if !w.started {
		_ = w.event(openai.RoleChunk(base))
	}
	if err := w.event(openai.FinishChunk(base, g.finishReason)); err != nil {
		return http.StatusOK
	}
	if so := j.req.StreamOptions; so != nil && so.IncludeUsage {
		_ = w.event(openai.UsageChunk(base, j.openaiUsage(g)))
	}
	_ = w.done()
	return http.StatusOK
}
