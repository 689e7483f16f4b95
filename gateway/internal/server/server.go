// Package server is the gateway's HTTP layer: Gin routes for the OpenAI chat
// API, model listing and health, the SSE writer, and the request flow
// (admission, images, prompt, generation, usage).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/openai"
	"github.com/vlcache/vlcache/gateway/internal/telemetry"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

// Generator runs one generation on the inference server; *triton.Client is
// the real one, handler unit tests use a fake.
type Generator interface {
	Generate(ctx context.Context, req triton.Request, fn func(triton.Chunk) error) error
	Ready(ctx context.Context, models ...string) error
}

// Model is one served model.
type Model struct {
	Name        string // the OpenAI model id clients send
	TritonModel string // the model's name in the Triton repository
	Chat        *chat.Model
	Images      *images.Processor
	Created     int64
}

// Options configure a Server; zero values get the documented defaults.
type Options struct {
	Models           []*Model
	Generator        Generator
	Admitter         admission.Admitter
	Images           *images.Loader
	DefaultMaxTokens int           // when the request gives none (default 256)
	MaxImages        int           // images per request (default 16)
	MaxBodyBytes     int64         // request body cap (default 64 MiB)
	RequestTimeout   time.Duration // whole request, stream included (0: none)
	ReadyTimeout     time.Duration // per /readyz probe (default 2s)
	Logger           *slog.Logger
	Metrics          *telemetry.Metrics // optional
	// ExtraReady is checked by /readyz besides Triton (the tenant store).
	ExtraReady func(context.Context) error
}

// Server serves the API.
type Server struct {
	opt    Options
	models map[string]*Model
	engine *gin.Engine
}

func New(opt Options) (*Server, error) {
	if opt.Generator == nil || opt.Admitter == nil || opt.Images == nil || len(opt.Models) == 0 {
		return nil, errors.New("server needs a generator, an admitter, an image loader and at least one model")
	}
	if opt.DefaultMaxTokens <= 0 {
		opt.DefaultMaxTokens = 256
	}
	if opt.MaxImages <= 0 {
		opt.MaxImages = 16
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 64 << 20
	}
	if opt.ReadyTimeout <= 0 {
		opt.ReadyTimeout = 2 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	s := &Server{opt: opt, models: map[string]*Model{}}
	for _, m := range opt.Models {
		if _, dup := s.models[m.Name]; dup {
			return nil, fmt.Errorf("model %q is served twice", m.Name)
		}
		s.models[m.Name] = m
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.ContextWithFallback = true // handlers' c.Done follows the request's context
	r.Use(s.requestID, s.recover, telemetry.GinMiddleware("vlcache-gateway"), s.accessLog)
	r.POST("/v1/chat/completions", s.chatCompletions)
	r.GET("/v1/models", s.listModels)
	r.GET("/v1/models/:model", s.getModel)
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.ready)
	if opt.Metrics != nil {
		r.GET("/metrics", gin.WrapH(opt.Metrics.Handler()))
	}
	r.NoRoute(func(c *gin.Context) {
		s.writeError(c, &openai.APIError{Status: 404, Type: "invalid_request_error", Code: "not_found",
			Message: fmt.Sprintf("no route %s %s", c.Request.Method, c.Request.URL.Path)})
	})
	r.HandleMethodNotAllowed = true
	r.NoMethod(func(c *gin.Context) {
		s.writeError(c, &openai.APIError{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: fmt.Sprintf("%s is not allowed on %s", c.Request.Method, c.Request.URL.Path)})
	})
	s.engine = r
	return s, nil
}

func (s *Server) Handler() http.Handler { return s.engine }

const requestIDKey = "request_id"

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// requestID keeps a sane client-sent x-request-id or makes one, and puts it
// on every response.
func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader("X-Request-Id")
	if !validRequestID.MatchString(id) {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = "req-" + hex.EncodeToString(b[:])
	}
	c.Set(requestIDKey, id)
	c.Header("X-Request-Id", id)
	c.Next()
}

func (s *Server) log(c *gin.Context) *slog.Logger {
	return s.opt.Logger.With("request_id", c.GetString(requestIDKey))
}

func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	s.log(c).Info("request", "method", c.Request.Method, "path", c.Request.URL.Path,
		"status", c.Writer.Status(), "duration_ms", time.Since(start).Milliseconds())
}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log(c).Error("panic", "value", fmt.Sprint(v))
			if !c.Writer.Written() {
				s.writeError(c, &openai.APIError{Status: 500, Type: "server_error", Message: "internal error"})
			}
			c.Abort()
		}
	}()
	c.Next()
}

// writeError sends an OpenAI-shaped error (only while nothing was written).
func (s *Server) writeError(c *gin.Context, err error) *openai.APIError {
	api := openai.FromError(err)
	for k, vs := range api.Header {
		for _, v := range vs {
			c.Writer.Header().Add(k, v)
		}
	}
	if api.Status >= 500 {
		s.log(c).Error("request failed", "status", api.Status, "error", err)
	}
	if !c.Writer.Written() {
		c.AbortWithStatusJSON(api.Status, api.Body())
	}
	return api
}

func (s *Server) listModels(c *gin.Context) {
	list := openai.ModelList{Object: "list", Data: []openai.Model{}}
	for _, m := range s.opt.Models {
		list.Data = append(list.Data, openai.Model{ID: m.Name, Object: "model", Created: m.Created, OwnedBy: "vlcache"})
	}
	c.JSON(http.StatusOK, list)
}

func (s *Server) getModel(c *gin.Context) {
	m, ok := s.models[c.Param("model")]
	if !ok {
		s.writeError(c, modelNotFound(c.Param("model")))
		return
	}
	c.JSON(http.StatusOK, openai.Model{ID: m.Name, Object: "model", Created: m.Created, OwnedBy: "vlcache"})
}

func modelNotFound(name string) *openai.APIError {
	return &openai.APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
		Message: fmt.Sprintf("the model %q does not exist", name)}
}

func (s *Server) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.opt.ReadyTimeout)
	defer cancel()
	names := make([]string, 0, len(s.opt.Models))
	for _, m := range s.opt.Models {
		names = append(names, m.TritonModel)
	}
	err := s.opt.Generator.Ready(ctx, names...)
	if err == nil && s.opt.ExtraReady != nil {
		err = s.opt.ExtraReady(ctx)
	}
	if err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "not ready", "reason": err.Error()})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}
