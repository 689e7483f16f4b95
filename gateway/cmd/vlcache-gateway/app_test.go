package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var model = filepath.Join("..", "..", "..", "testdata", "tiny-llava-random")

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMainRejectsBadConfig(t *testing.T) {
	var stderr bytes.Buffer
	err := Main(context.Background(), []string{"-default-keep-ratio", "2", "-model", "x=/nonexistent"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-default-keep-ratio") || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Fatalf("err = %v", err)
	}
}

// Without a tritonserver the gateway still starts, answers health and model
// listing, reports not ready, and stops cleanly when its context ends.
func TestMainServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, []string{"-listen", "127.0.0.1:18120", "-triton-grpc", "127.0.0.1:18121", "-startup-timeout", "0",
			"-model", "tiny=" + model + ":tiny-llava"}, &logs)
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://127.0.0.1:18120" + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := get("/healthz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never became healthy; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get("/v1/models"); code != 200 || !strings.Contains(body, `"tiny"`) {
		t.Fatalf("models: %d %s", code, body)
	}
	if code, body := get("/readyz"); code != 503 {
		t.Fatalf("readyz without Triton: %d %s", code, body)
	}
	resp, err := http.Post("http://127.0.0.1:18120/v1/chat/completions", "application/json",
		strings.NewReader(`{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "service_unavailable") {
		t.Fatalf("chat without Triton: %d %s", resp.StatusCode, b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Main did not return after cancel")
	}
	if !strings.Contains(logs.String(), "request_id") {
		t.Fatalf("logs carry no request id:\n%s", logs.String())
	}
}
