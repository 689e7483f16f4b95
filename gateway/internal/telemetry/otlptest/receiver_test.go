package otlptest_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/telemetry/otlptest"
)

// tritonserver exports OTLP/JSON with hex ids (the OTLP JSON rule), unlike
// protobuf's raw bytes; both must come out as the same hex text.
func TestJSONIDsAreHex(t *testing.T) {
	r, err := otlptest.Start("127.0.0.1:0")
	require.NoError(t, err)
	defer r.Close()
	body := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"tritonserver"}}]},
	  "scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331",
	  "parentSpanId":"00f067aa0ba902b7","name":"InferRequest","events":[{"name":"GRPC_SEND_START"}]}]}]}]}`
	resp, err := http.Post(r.Endpoint()+"/v1/traces", "application/json", bytes.NewBufferString(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []otlptest.Span{{Service: "tritonserver", Name: "InferRequest", TraceID: "0af7651916cd43dd8448eb211c80319c",
		SpanID: "b7ad6b7169203331", ParentID: "00f067aa0ba902b7", Events: []string{"GRPC_SEND_START"}}}, r.Spans())

	resp, err = http.Post(r.Endpoint()+"/v1/traces", "application/json", bytes.NewBufferString("{not json"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Len(t, r.Errors(), 1)
}
