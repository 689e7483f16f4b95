package triton

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vlcache/vlcache/gateway/internal/triton/inference"
)

// fakeTriton stands in for tritonserver inside this package's unit tests only;
// the real server is exercised by the gateway's end-to-end tests.
type fakeTriton struct {
	inference.UnimplementedGRPCInferenceServiceServer
	mode      string // "ok", "error", "hang"
	got       chan *inference.ModelInferRequest
	cancelled chan struct{}
}

func (f *fakeTriton) ServerReady(context.Context, *inference.ServerReadyRequest) (*inference.ServerReadyResponse, error) {
	return &inference.ServerReadyResponse{Ready: true}, nil
}

func (f *fakeTriton) ModelReady(_ context.Context, r *inference.ModelReadyRequest) (*inference.ModelReadyResponse, error) {
	return &inference.ModelReadyResponse{Ready: r.GetName() == "llava"}, nil
}

func bytesEl(s string) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func idsResponse(ids []int32, final bool, extra ...*inference.ModelInferResponse_InferOutputTensor) *inference.ModelStreamInferResponse {
	r := &inference.ModelInferResponse{
		Parameters: map[string]*inference.InferParameter{
			"triton_final_response": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: final}},
		},
		Outputs:           []*inference.ModelInferResponse_InferOutputTensor{{Name: "output_ids", Datatype: "INT32"}},
		RawOutputContents: [][]byte{int32Bytes(ids)},
	}
	if final {
		r.Outputs = append(r.Outputs, &inference.ModelInferResponse_InferOutputTensor{Name: "finish_reason"},
			&inference.ModelInferResponse_InferOutputTensor{Name: "stats"})
		r.RawOutputContents = append(r.RawOutputContents, bytesEl("length"),
			bytesEl(`{"prompt_tokens": 77, "image_tokens": 64, "completion_tokens": 3, "policy": "vlcache", "keep_ratio": 0.1, "kv_tokens_full": 1000, "kv_tokens_kept": 100, "kv_bytes_full": 64000, "kv_bytes_kept": 6400}`))
	}
	return &inference.ModelStreamInferResponse{InferResponse: r}
}

func (f *fakeTriton) ModelStreamInfer(s grpc.BidiStreamingServer[inference.ModelInferRequest, inference.ModelStreamInferResponse]) error {
	req, err := s.Recv()
	if err != nil {
		return err
	}
	f.got <- req
	switch f.mode {
	case "error":
		return s.Send(&inference.ModelStreamInferResponse{ErrorMessage: "kv_keep_ratio 7 is outside (0, 1]"})
	case "hang":
		if err := s.Send(idsResponse([]int32{5}, false)); err != nil {
			return err
		}
		<-s.Context().Done()
		close(f.cancelled)
		return s.Context().Err()
	}
	for _, r := range []*inference.ModelStreamInferResponse{idsResponse([]int32{5, 6}, false), idsResponse([]int32{7}, false), idsResponse(nil, true)} {
		if err := s.Send(r); err != nil {
			return err
		}
	}
	return nil
}

func serve(t *testing.T, addr string, f *fakeTriton) *grpc.Server {
	t.Helper()
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after a restart
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	inference.RegisterGRPCInferenceServiceServer(srv, f)
	go srv.Serve(lis)
	return srv
}

func newFake(mode string) *fakeTriton {
	return &fakeTriton{mode: mode, got: make(chan *inference.ModelInferRequest, 1), cancelled: make(chan struct{})}
}

func TestGenerateStreamsUntilFinal(t *testing.T) {
	f := newFake("ok")
	srv := serve(t, "127.0.0.1:18110", f)
	defer srv.Stop()
	c, err := Dial("127.0.0.1:18110", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var ids []int32
	var final Chunk
	err = c.Generate(context.Background(), Request{
		Model: "llava", InputIDs: []int32{1, 4, 4, 2}, MaxTokens: 3, KeepRatio: 0.1, Policy: "vlcache", CompressAfter: 3,
		IgnoreEOS: true,
		Images:    []Image{{Height: 2, Width: 1, RGB: []byte{1, 2, 3, 4, 5, 6}}},
	}, func(ch Chunk) error {
		ids = append(ids, ch.OutputIDs...)
		if ch.Final {
			final = ch
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[0] != 5 || ids[2] != 7 {
		t.Fatalf("ids %v", ids)
	}
	if final.FinishReason != "length" || final.Stats == nil || final.Stats.KVTokensKept != 100 || final.Stats.Policy != "vlcache" {
		t.Fatalf("final %+v stats %+v", final, final.Stats)
	}
	req := <-f.got
	if !req.GetParameters()["triton_enable_empty_final_response"].GetBoolParam() {
		t.Fatal("the empty final response must be asked for")
	}
	inputs := map[string][]byte{}
	shapes := map[string][]int64{}
	for i, in := range req.GetInputs() {
		inputs[in.GetName()] = req.GetRawInputContents()[i]
		shapes[in.GetName()] = in.GetShape()
	}
	if got := shapes["images"]; len(got) != 4 || got[0] != 1 || got[1] != 2 || got[2] != 1 || got[3] != 3 {
		t.Fatalf("images shape %v", got)
	}
	if binary.LittleEndian.Uint32(inputs["compress_after"]) != 3 || len(inputs["input_ids"]) != 16 {
		t.Fatalf("inputs %v", inputs)
	}
	if string(inputs["kv_policy"][4:]) != "vlcache" {
		t.Fatalf("kv_policy %q", inputs["kv_policy"])
	}
	if got := inputs["ignore_eos"]; len(got) != 1 || got[0] != 1 {
		t.Fatalf("ignore_eos %v", got)
	}
	if _, sent := inputs["return_kept_positions"]; sent {
		t.Fatal("return_kept_positions sent though not asked for")
	}
}

func TestGenerateBackendError(t *testing.T) {
	f := newFake("error")
	srv := serve(t, "127.0.0.1:18111", f)
	defer srv.Stop()
	c, _ := Dial("127.0.0.1:18111", Options{})
	defer c.Close()
	err := c.Generate(context.Background(), Request{Model: "llava", InputIDs: []int32{1}}, func(Chunk) error { return nil })
	var be *BackendError
	if !errors.As(err, &be) || be.Message != "kv_keep_ratio 7 is outside (0, 1]" {
		t.Fatalf("err = %v", err)
	}
}

func TestGenerateCancelClosesStream(t *testing.T) {
	f := newFake("hang")
	srv := serve(t, "127.0.0.1:18112", f)
	defer srv.Stop()
	c, _ := Dial("127.0.0.1:18112", Options{})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	err := c.Generate(ctx, Request{Model: "llava", InputIDs: []int32{1}}, func(ch Chunk) error {
		cancel() // the client hung up after the first token
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-f.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the server never saw the stream cancelled")
	}
}

func TestReconnectsAfterRestart(t *testing.T) {
	addr := "127.0.0.1:18113"
	srv := serve(t, addr, newFake("ok"))
	c, _ := Dial(addr, Options{MaxBackoff: 200 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ready(ctx, "llava"); err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(ctx, "other"); err == nil {
		t.Fatal("an unknown model must not be ready")
	}
	srv.Stop()
	if err := c.Ready(ctx); err == nil {
		t.Fatal("a stopped server must not be ready")
	}
	srv = serve(t, addr, newFake("ok"))
	defer srv.Stop()
	var err error
	for ctx.Err() == nil {
		if err = c.Ready(ctx, "llava"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("never reconnected: %v", err)
	}
}

func TestBuildRequestRejectsMixedImageSizes(t *testing.T) {
	_, err := buildRequest(Request{InputIDs: []int32{1}, Images: []Image{
		{Height: 1, Width: 1, RGB: make([]byte, 3)}, {Height: 2, Width: 1, RGB: make([]byte, 6)}}})
	if err == nil {
		t.Fatal("want an error")
	}
}
