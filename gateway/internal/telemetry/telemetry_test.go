package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/vlcache/vlcache/gateway/internal/telemetry"
	"github.com/vlcache/vlcache/gateway/internal/telemetry/otlptest"
)

func TestTracingEnabled(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
	}
	for _, c := range cases {
		got := telemetry.TracingEnabled(func(k string) string { return c.env[k] })
		require.Equal(t, c.want, got, "%v", c.env)
	}
}

// One process: SetupTracing from OTEL_* variables, an incoming traceparent on
// the HTTP side (otelgin), our stage spans, and the traceparent sent on to a
// gRPC server (otelgrpc), all in one trace exported over OTLP/HTTP.
func TestTracePropagatesFromHTTPToGRPC(t *testing.T) {
	recv, err := otlptest.Start("127.0.0.1:0")
	require.NoError(t, err)
	defer recv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.Endpoint())
	t.Setenv("OTEL_SERVICE_NAME", "gateway-under-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	ctx := context.Background()
	shutdown, enabled, err := telemetry.SetupTracing(ctx)
	require.NoError(t, err)
	require.True(t, enabled)

	// The "Triton" side: a gRPC server that records the traceparent it receives.
	seen := make(chan string, 1)
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		seen <- strings.Join(md.Get("traceparent"), ",")
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), append(telemetry.GRPCDialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	require.NoError(t, err)
	defer conn.Close()

	gin.SetMode(gin.TestMode)
	r := gin.New()
	r.Use(telemetry.GinMiddleware("gateway-under-test"))
	r.POST("/v1/chat/completions", func(c *gin.Context) {
		ctx := c.Request.Context()
		_, auth := telemetry.Start(ctx, telemetry.SpanAuth)
		telemetry.End(auth, nil)
		_, tok := telemetry.Start(ctx, telemetry.SpanTokenize)
		telemetry.End(tok, errors.New("recorded, not fatal"))
		sctx, stream := telemetry.StartStream(ctx, "llava-tiny")
		_, err := healthpb.NewHealthClient(conn).Check(sctx, &healthpb.HealthCheckRequest{})
		stream.Tokens(0)
		stream.Tokens(3)
		stream.Tokens(1)
		stream.End("stop", err)
		c.String(http.StatusOK, trace.SpanContextFromContext(ctx).TraceID().String())
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, traceID, string(body), "otelgin continues the caller's trace")
	select {
	case tp := <-seen:
		require.Contains(t, tp, traceID, "the gRPC call carries the same trace id in W3C form")
	case <-time.After(5 * time.Second):
		t.Fatal("gRPC server saw no call")
	}

	require.NoError(t, shutdown(ctx))
	spans := recv.Traces()[traceID]
	names := map[string]otlptest.Span{}
	for _, s := range spans {
		names[s.Name] = s
		require.Equal(t, "gateway-under-test", s.Service)
	}
	for _, want := range []string{"POST /v1/chat/completions", telemetry.SpanAuth, telemetry.SpanTokenize,
		telemetry.SpanTritonStream, "grpc.health.v1.Health/Check"} {
		require.Contains(t, names, want, "span %s in trace %s; got %v", want, traceID, spans)
	}
	require.Equal(t, []string{telemetry.EventFirstToken}, names[telemetry.SpanTritonStream].Events, "first token is one event")
	require.Equal(t, names[telemetry.SpanTritonStream].SpanID, names["grpc.health.v1.Health/Check"].ParentID,
		"the gRPC client span nests under triton.stream")
	require.Equal(t, names["POST /v1/chat/completions"].SpanID, names[telemetry.SpanAuth].ParentID)
}

func TestSetupTracingOffByDefault(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
	shutdown, enabled, err := telemetry.SetupTracing(context.Background())
	require.NoError(t, err)
	require.False(t, enabled)
	require.NoError(t, shutdown(context.Background()))

	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	_, _, err = telemetry.SetupTracing(context.Background())
	require.ErrorContains(t, err, "zipkin")
}
