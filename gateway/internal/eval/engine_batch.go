package eval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vlcache/vlcache/gateway/internal/chat"
)

// BatchEngineBackend drives a runner that reads all its input before it
// starts (the current `vlcache-run --jsonl` does): requests are gathered into
// batches, each batch is one runner process fed the batch's lines and then
// end of input, and the results are handed back as they are written. A batch
// goes when it holds BatchSize requests or when FlushDelay passes without a
// new request.
type BatchEngineBackend struct {
	model      *chat.Model
	runner     string
	args       []string
	stderr     io.Writer
	batchSize  int
	flushDelay time.Duration

	mu      sync.Mutex
	queue   []*batchItem
	timer   *time.Timer
	closed  bool
	running chan struct{} // runner processes at once
	wg      sync.WaitGroup
	batches atomic.Int64
	procs   sync.Map // *exec.Cmd -> struct{}, for Kill
}

type batchItem struct {
	id   string
	line []byte
	ch   chan engineResult
}

// NewBatchEngine prepares the backend; no process runs until requests come.
// procs runner processes may run at once (each with its own threads).
func NewBatchEngine(model *chat.Model, runner, modelDir string, args []string, batchSize, procs int, flushDelay time.Duration, stderr io.Writer) (*BatchEngineBackend, error) {
	if _, err := exec.LookPath(runner); err != nil {
		return nil, fmt.Errorf("engine runner %s: %w (build it with make build-cpp)", runner, err)
	}
	if batchSize < 1 || procs < 1 {
		return nil, errors.New("batch size and runner processes must be at least 1")
	}
	return &BatchEngineBackend{model: model, runner: runner, args: append([]string{"--jsonl", "--model", modelDir}, args...),
		stderr: stderr, batchSize: batchSize, flushDelay: flushDelay, running: make(chan struct{}, procs)}, nil
}

// Describe names the runner, its arguments and the batching.
func (b *BatchEngineBackend) Describe() string {
	return fmt.Sprintf("engine runner: %s %s (batches of up to %d requests, one process per batch, %d at once)",
		b.runner, strings.Join(b.args, " "), b.batchSize, cap(b.running))
}

// Batches is how many runner processes have been started.
func (b *BatchEngineBackend) Batches() int64 { return b.batches.Load() }

// Generate queues one request and waits for its result.
func (b *BatchEngineBackend) Generate(ctx context.Context, req *Request) (*Response, error) {
	line, err := requestLine(b.model, req)
	if err != nil {
		return nil, err
	}
	it := &batchItem{id: req.ID, line: line, ch: make(chan engineResult, 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("engine backend closed")
	}
	b.queue = append(b.queue, it)
	if len(b.queue) >= b.batchSize {
		b.flushLocked()
	} else if b.timer == nil {
		b.timer = time.AfterFunc(b.flushDelay, b.flushIdle)
	} else {
		b.timer.Reset(b.flushDelay)
	}
	b.mu.Unlock()
	select {
	case r := <-it.ch:
		return toResponse(b.model, r)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *BatchEngineBackend) flushIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *BatchEngineBackend) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if len(b.queue) == 0 {
		return
	}
	items := b.queue
	b.queue = nil
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.running <- struct{}{}
		defer func() { <-b.running }()
		b.runBatch(items)
	}()
}

// runBatch runs one runner process over items; every item gets a result.
func (b *BatchEngineBackend) runBatch(items []*batchItem) {
	b.batches.Add(1)
	byID := make(map[string]*batchItem, len(items))
	for _, it := range items {
		byID[it.id] = it
	}
	fail := func(msg string) {
		for _, it := range byID {
			it.ch <- engineResult{ID: it.id, Error: msg}
		}
	}
	cmd := exec.Command(b.runner, b.args...)
	var errTail tailBuffer
	cmd.Stderr = io.MultiWriter(b.stderr, &errTail)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fail(err.Error())
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fail(err.Error())
		return
	}
	if err := cmd.Start(); err != nil {
		fail(fmt.Sprintf("failed to start the engine runner: %v", err))
		return
	}
	b.procs.Store(cmd, struct{}{})
	defer b.procs.Delete(cmd)
	go func() {
		// Written from its own goroutine so a runner that answers early
		// cannot block on a full stdout while we block on its stdin.
		for _, it := range items {
			if _, err := stdin.Write(it.line); err != nil {
				break
			}
		}
		stdin.Close()
	}()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for sc.Scan() {
		var r engineResult
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if it := byID[r.ID]; it != nil {
			delete(byID, r.ID)
			it.ch <- r
		}
	}
	werr := cmd.Wait()
	if len(byID) > 0 {
		fail(fmt.Sprintf("the engine runner ended without a result (%v): %s", werr, errTail.String()))
	}
}

// Kill stops running runner processes (interrupt).
func (b *BatchEngineBackend) Kill() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.procs.Range(func(k, _ any) bool {
		if c := k.(*exec.Cmd); c.Process != nil {
			_ = c.Process.Kill()
		}
		return true
	})
}

// Close flushes what is queued and waits for the runner processes.
func (b *BatchEngineBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.flushLocked()
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// tailBuffer keeps the last bytes written, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const tailBytes = 2048

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if t.buf.Len() > 2*tailBytes {
		keep := t.buf.Bytes()[t.buf.Len()-tailBytes:]
		t.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.buf.String()
	if len(s) > tailBytes {
		s = s[len(s)-tailBytes:]
	}
	return strings.TrimSpace(s)
}
