package telemetry

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/contrib/instrumentation/github.com/gin-gonic/gin/otelgin"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Span names: one per stage of a request, so a trace reads as the request's
// path from the HTTP edge into Triton.
const (
	TracerName       = "github.com/vlcache/vlcache/gateway"
	SpanAuth         = "gateway.auth"
	SpanLimits       = "gateway.limits"
	SpanChargePrompt = "gateway.limits.prompt_tokens"
	SpanImageFetch   = "gateway.image_fetch"
	SpanPreprocess   = "gateway.preprocess"
	SpanTokenize     = "gateway.tokenize"
	SpanTritonStream = "triton.stream"
	EventFirstToken  = "first_token"
)

// Start opens a child span of whatever span ctx carries.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return otel.Tracer(TracerName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// End closes a span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Stream traces one Triton generation stream: first token as an event, the
// token count and finish reason as attributes.
type Stream struct {
	span   trace.Span
	start  time.Time
	tokens int
}

// StartStream opens the triton.stream span; pass its ctx to the gRPC call so
// otelgrpc's span and Triton's own spans nest below it.
func StartStream(ctx context.Context, model string) (context.Context, *Stream) {
	ctx, span := Start(ctx, SpanTritonStream, attribute.String("gen_ai.request.model", model))
	return ctx, &Stream{span: span, start: time.Now()}
}

// Tokens records n tokens received; the first non-empty batch adds the
// first_token event.
func (s *Stream) Tokens(n int) {
	if n <= 0 {
		return
	}
	if s.tokens == 0 {
		s.span.AddEvent(EventFirstToken, trace.WithAttributes(
			attribute.Float64("time_to_first_token_ms", float64(time.Since(s.start).Microseconds())/1000)))
	}
	s.tokens += n
}

// End closes the stream span.
func (s *Stream) End(finishReason string, err error) {
	s.span.SetAttributes(attribute.Int("gen_ai.usage.output_tokens", s.tokens),
		attribute.String("gen_ai.response.finish_reason", finishReason))
	End(s.span, err)
}

// GinMiddleware traces every HTTP request except scrapes and probes, taking
// the parent from an incoming traceparent header.
func GinMiddleware(service string) gin.HandlerFunc {
	return otelgin.Middleware(service, otelgin.WithFilter(func(r *http.Request) bool {
		p := r.URL.Path
		return p != "/metrics" && p != "/healthz" && p != "/readyz" && !strings.HasPrefix(p, "/debug/")
	}))
}

// GRPCDialOptions instruments the Triton connection: a client span per RPC and
// the W3C traceparent in the gRPC metadata, which tritonserver started with
// --trace-config mode=opentelemetry continues.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}
