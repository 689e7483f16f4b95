// Package triton is the gateway's client for tritonserver's gRPC protocol: a
// connection that survives server restarts (gRPC reconnects on its own), model
// readiness and metadata, and Generate, which streams one decoupled request
// (one sequence) through ModelStreamInfer. Tensor names are those of
// docs/contract.md.
package triton

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vlcache/vlcache/gateway/internal/triton/inference"
)

// Client talks to one tritonserver.
type Client struct {
	conn *grpc.ClientConn
	svc  inference.GRPCInferenceServiceClient
}

// Options tune the connection.
type Options struct {
	// MaxBackoff caps the wait between reconnection attempts after the server
	// went away.
	MaxBackoff time.Duration
	// MaxMessageBytes caps a message in either direction (images are large).
	MaxMessageBytes int
}

// Dial prepares a connection; it connects lazily and reconnects by itself.
func Dial(addr string, opts Options) (*Client, error) {
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 256 << 20
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = opts.MaxBackoff
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 2 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessageBytes), grpc.MaxCallSendMsgSize(opts.MaxMessageBytes)),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		// With a dns:/// target naming several Triton replicas (a headless
		// Kubernetes Service), spread streams over all of them.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
	)
	if err != nil {
		return nil, fmt.Errorf("failed to create the Triton client for %s: %w", addr, err)
	}
	return &Client{conn: conn, svc: inference.NewGRPCInferenceServiceClient(conn)}, nil
}

func (c *Client) Close() error { return c.conn.Close() }

// Ready reports whether the server is ready and each model is loaded.
func (c *Client) Ready(ctx context.Context, models ...string) error {
	r, err := c.svc.ServerReady(ctx, &inference.ServerReadyRequest{})
	if err != nil {
		return fmt.Errorf("tritonserver is not reachable: %w", err)
	}
	if !r.GetReady() {
		return errors.New("tritonserver is not ready")
	}
	for _, m := range models {
		mr, err := c.svc.ModelReady(ctx, &inference.ModelReadyRequest{Name: m})
		if err != nil {
			return fmt.Errorf("failed to ask whether model %q is ready: %w", m, err)
		}
		if !mr.GetReady() {
			return fmt.Errorf("model %q is not ready", m)
		}
	}
	return nil
}

// Metadata returns a model's inputs and outputs.
func (c *Client) Metadata(ctx context.Context, model string) (*inference.ModelMetadataResponse, error) {
	md, err := c.svc.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: model})
	if err != nil {
		return nil, fmt.Errorf("failed to read metadata of model %q: %w", model, err)
	}
	return md, nil
}

// CheckContract verifies that a served model has the inputs and outputs the
// gateway sends and reads, so a mismatch is found at start, not per request.
func (c *Client) CheckContract(ctx context.Context, model string) error {
	md, err := c.Metadata(ctx, model)
	if err != nil {
		return err
	}
	have := map[string]string{}
	for _, t := range md.GetInputs() {
		have["in:"+t.GetName()] = t.GetDatatype()
	}
	for _, t := range md.GetOutputs() {
		have["out:"+t.GetName()] = t.GetDatatype()
	}
	var errs []error
	for name, dtype := range map[string]string{
		"in:input_ids": "INT32", "in:max_tokens": "INT32", "out:output_ids": "INT32",
		"out:finish_reason": "BYTES", "out:stats": "BYTES",
	} {
		if got, ok := have[name]; !ok || got != dtype {
			errs = append(errs, fmt.Errorf("model %q: %s should be %s, metadata says %q", model, name, dtype, got))
		}
	}
	return errors.Join(errs...)
}

// Image is one resized RGB image, H*W*3 bytes.
type Image struct {
	Height, Width int
	RGB           []byte
}

// Request is one generation: a sequence in the backend.
type Request struct {
	Model               string
	ID                  string
	InputIDs            []int32
	Images              []Image // all the same size
	MaxTokens           int32
	Temperature         float32
	TopP                float32
	TopK                int32
	Seed                uint64
	StopTokenIDs        []int32
	KeepRatio           float32 // 0: the model's default
	Policy              string  // "": the model's default
	BudgetMode          string
	CompressAfter       int32
	ReturnKeptPositions bool
	IgnoreEOS           bool // generate past eos up to MaxTokens (benchmarks)
}

// Stats is the backend's per-request accounting (docs/contract.md).
type Stats struct {
	PromptTokens     int             `json:"prompt_tokens"`
	ImageTokens      int             `json:"image_tokens"`
	CompletionTokens int             `json:"completion_tokens"`
	Policy           string          `json:"policy"`
	KeepRatio        float64         `json:"keep_ratio"`
	BudgetMode       string          `json:"budget_mode"`
	KVTokensFull     int64           `json:"kv_tokens_full"`
	KVTokensKept     int64           `json:"kv_tokens_kept"`
	KVBytesFull      int64           `json:"kv_bytes_full"`
	KVBytesKept      int64           `json:"kv_bytes_kept"`
	Error            string          `json:"error"` // with finish_reason "error"
	Raw              json.RawMessage `json:"-"`
}

// Chunk is one streamed response.
type Chunk struct {
	OutputIDs    []int32
	Final        bool
	FinishReason string // final chunk only
	Stats        *Stats // the final chunk; also the first, as known after compression
}

// BackendError is a request the backend refused or failed.
type BackendError struct{ Message string }

func (e *BackendError) Error() string { return "backend: " + e.Message }

// ErrStreamEnded means the server closed the stream before the final response.
var ErrStreamEnded = errors.New("tritonserver closed the stream before the final response")

// Generate sends one request and calls fn for every response until the final
// one. Cancelling ctx closes the stream, which makes Triton cancel the
// request so the backend frees the sequence.
func (c *Client) Generate(ctx context.Context, req Request, fn func(Chunk) error) error {
	msg, err := buildRequest(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.svc.ModelStreamInfer(ctx)
	if err != nil {
		return fmt.Errorf("failed to open the Triton stream: %w", err)
	}
	if err := stream.Send(msg); err != nil {
		if errors.Is(err, io.EOF) {
			_, err = stream.Recv() // the real reason is on the receive side
		}
		return fmt.Errorf("failed to send the request to Triton: %w", err)
	}
	// One request per stream: half-close now, so Triton ends the stream with OK
	// after the final response instead of seeing it cancelled (which also leaves
	// its trace's root span open longer).
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("failed to close the Triton stream for sending: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return ErrStreamEnded
			}
			if ctx.Err() != nil && status.Code(err) == codes.Canceled {
				return ctx.Err()
			}
			return fmt.Errorf("failed to receive from Triton: %w", err)
		}
		if m := resp.GetErrorMessage(); m != "" {
			return &BackendError{Message: m}
		}
		chunk, err := parseResponse(resp.GetInferResponse())
		if err != nil {
			return err
		}
		if err := fn(chunk); err != nil {
			return err
		}
		if chunk.Final {
			drainStream(stream, cancel)
			return nil
		}
	}
}

// streamDrainTimeout bounds the wait for Triton's end of stream after the final
// response; past it the stream is cancelled as before.
const streamDrainTimeout = 2 * time.Second

// drainStream reads the stream's end (io.EOF, status OK) after the final
// response, so the RPC completes normally on both sides; a server that does
// not end it in time gets the stream cancelled, which ends the read.
func drainStream(stream inference.GRPCInferenceService_ModelStreamInferClient, cancel context.CancelFunc) {
	timer := time.AfterFunc(streamDrainTimeout, cancel)
	defer timer.Stop()
	for {
		if _, err := stream.Recv(); err != nil {
			return
		}
	}
}

func buildRequest(r Request) (*inference.ModelInferRequest, error) {
	if len(r.InputIDs) == 0 {
		return nil, errors.New("input_ids is empty")
	}
	msg := &inference.ModelInferRequest{
		ModelName: r.Model,
		Id:        r.ID,
		Parameters: map[string]*inference.InferParameter{
			"triton_enable_empty_final_response": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: true}},
		},
	}
	add := func(name, dtype string, shape []int64, raw []byte) {
		msg.Inputs = append(msg.Inputs, &inference.ModelInferRequest_InferInputTensor{Name: name, Datatype: dtype, Shape: shape})
		msg.RawInputContents = append(msg.RawInputContents, raw)
	}
	add("input_ids", "INT32", []int64{int64(len(r.InputIDs))}, int32Bytes(r.InputIDs))
	if len(r.Images) > 0 {
		h, w := r.Images[0].Height, r.Images[0].Width
		raw := make([]byte, 0, len(r.Images)*h*w*3)
		for i, im := range r.Images {
			if im.Height != h || im.Width != w || len(im.RGB) != h*w*3 {
				return nil, fmt.Errorf("image %d is %dx%d with %d bytes; all images must be %dx%d RGB", i, im.Width, im.Height, len(im.RGB), w, h)
			}
			raw = append(raw, im.RGB...)
		}
		add("images", "UINT8", []int64{int64(len(r.Images)), int64(h), int64(w), 3}, raw)
	}
	add("max_tokens", "INT32", []int64{1}, int32Bytes([]int32{r.MaxTokens}))
	add("temperature", "FP32", []int64{1}, fp32Bytes(r.Temperature))
	add("top_p", "FP32", []int64{1}, fp32Bytes(r.TopP))
	add("top_k", "INT32", []int64{1}, int32Bytes([]int32{r.TopK}))
	add("seed", "UINT64", []int64{1}, binary.LittleEndian.AppendUint64(nil, r.Seed))
	if len(r.StopTokenIDs) > 0 {
		add("stop_token_ids", "INT32", []int64{int64(len(r.StopTokenIDs))}, int32Bytes(r.StopTokenIDs))
	}
	if r.KeepRatio > 0 {
		add("kv_keep_ratio", "FP32", []int64{1}, fp32Bytes(r.KeepRatio))
	}
	if r.Policy != "" {
		add("kv_policy", "BYTES", []int64{1}, bytesElement(r.Policy))
	}
	if r.BudgetMode != "" {
		add("kv_budget_mode", "BYTES", []int64{1}, bytesElement(r.BudgetMode))
	}
	if r.CompressAfter > 0 {
		add("compress_after", "INT32", []int64{1}, int32Bytes([]int32{r.CompressAfter}))
	}
	if r.IgnoreEOS {
		add("ignore_eos", "BOOL", []int64{1}, []byte{1})
	}
	if r.ReturnKeptPositions {
		add("return_kept_positions", "BOOL", []int64{1}, []byte{1})
	}
	return msg, nil
}

func int32Bytes(v []int32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func fp32Bytes(v float32) []byte { return binary.LittleEndian.AppendUint32(nil, math.Float32bits(v)) }

// bytesElement is one element of a BYTES tensor: a 4-byte length, then the bytes.
func bytesElement(s string) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func parseResponse(resp *inference.ModelInferResponse) (Chunk, error) {
	var ch Chunk
	if resp == nil {
		return ch, errors.New("Triton sent an empty response")
	}
	if p, ok := resp.GetParameters()["triton_final_response"]; ok {
		ch.Final = p.GetBoolParam()
	}
	raw := resp.GetRawOutputContents()
	for i, out := range resp.GetOutputs() {
		var data []byte
		if i < len(raw) {
			data = raw[i]
		}
		switch out.GetName() {
		case "output_ids":
			if data == nil {
				ch.OutputIDs = out.GetContents().GetIntContents()
				continue
			}
			if len(data)%4 != 0 {
				return ch, fmt.Errorf("output_ids has %d bytes, not a multiple of 4", len(data))
			}
			ch.OutputIDs = make([]int32, len(data)/4)
			for k := range ch.OutputIDs {
				ch.OutputIDs[k] = int32(binary.LittleEndian.Uint32(data[4*k:]))
			}
		case "finish_reason":
			s, err := firstBytes(data, out)
			if err != nil {
				return ch, fmt.Errorf("finish_reason: %w", err)
			}
			ch.FinishReason = s
		case "stats":
			s, err := firstBytes(data, out)
			if err != nil {
				return ch, fmt.Errorf("stats: %w", err)
			}
			if s == "" {
				continue
			}
			st := &Stats{Raw: json.RawMessage(s)}
			if err := json.Unmarshal([]byte(s), st); err != nil {
				return ch, fmt.Errorf("failed to parse the backend stats: %w", err)
			}
			ch.Stats = st
		}
	}
	return ch, nil
}

func firstBytes(data []byte, out *inference.ModelInferResponse_InferOutputTensor) (string, error) {
	if data == nil {
		if c := out.GetContents().GetBytesContents(); len(c) > 0 {
			return string(c[0]), nil
		}
		return "", nil
	}
	if len(data) < 4 {
		return "", fmt.Errorf("%d bytes is too short for a BYTES element", len(data))
	}
	n := binary.LittleEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-4) {
		return "", fmt.Errorf("element length %d exceeds the %d bytes sent", n, len(data)-4)
	}
	return string(data[4 : 4+n]), nil
}

// ModelIndex lists the models the repository knows and their state.
func (c *Client) ModelIndex(ctx context.Context) ([]*inference.RepositoryIndexResponse_ModelIndex, error) {
	r, err := c.svc.RepositoryIndex(ctx, &inference.RepositoryIndexRequest{})
	if err != nil {
		return nil, fmt.Errorf("failed to read the model repository index: %w", err)
	}
	return r.GetModels(), nil
}
