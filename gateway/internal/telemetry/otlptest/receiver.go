// Package otlptest is an OTLP/HTTP trace receiver for tests: gateways and
// tritonserver export to it, and tests read back which spans share a trace.
package otlptest

import (
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Span is the part of an exported span the tests look at.
type Span struct {
	Service  string
	Name     string
	TraceID  string
	SpanID   string
	ParentID string
	Events   []string
}

// Receiver accepts POST /v1/traces (protobuf or JSON, optionally gzip).
type Receiver struct {
	srv *http.Server
	ln  net.Listener

	mu     sync.Mutex
	spans  []Span
	errors []string
}

// Start listens on addr ("127.0.0.1:0" for any free port).
func Start(addr string) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.handle)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		r.fail(w, req, fmt.Errorf("unexpected %s %s", req.Method, req.URL.Path))
	})
	r.srv = &http.Server{Handler: mux}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Addr is host:port.
func (r *Receiver) Addr() string { return r.ln.Addr().String() }

// Endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
func (r *Receiver) Endpoint() string { return "http://" + r.Addr() }

func (r *Receiver) Close() error { return r.srv.Close() }

func (r *Receiver) fail(w http.ResponseWriter, req *http.Request, err error) {
	r.mu.Lock()
	r.errors = append(r.errors, req.Header.Get("Content-Type")+": "+err.Error())
	r.mu.Unlock()
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// Errors lists the exports that could not be decoded.
func (r *Receiver) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errors...)
}

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			r.fail(w, req, err)
			return
		}
		body = gz
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		r.fail(w, req, err)
		return
	}
	var msg coltrace.ExportTraceServiceRequest
	// OTLP/JSON (tritonserver's exporter) writes ids as hex, but protojson reads
	// bytes fields as base64; encoding the decoded bytes back as base64 gives
	// the hex text again.
	id := hex.EncodeToString
	if strings.HasPrefix(req.Header.Get("Content-Type"), "application/json") {
		err = protojson.Unmarshal(raw, &msg)
		id = base64.StdEncoding.EncodeToString
	} else {
		err = proto.Unmarshal(raw, &msg)
	}
	if err != nil {
		r.fail(w, req, err)
		return
	}
	var got []Span
	for _, rs := range msg.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{Service: service, Name: s.GetName(), TraceID: id(s.GetTraceId()),
					SpanID: id(s.GetSpanId()), ParentID: id(s.GetParentSpanId())}
				for _, e := range s.GetEvents() {
					sp.Events = append(sp.Events, e.GetName())
				}
				got = append(got, sp)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Traces groups the spans received so far by trace id.
func (r *Receiver) Traces() map[string][]Span {
	out := map[string][]Span{}
	for _, s := range r.Spans() {
		out[s.TraceID] = append(out[s.TraceID], s)
	}
	return out
}
