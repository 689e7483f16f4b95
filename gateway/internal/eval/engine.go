package eval

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/vlcache/vlcache/gateway/internal/chat"
)

// EngineBackend drives the engine's command-line runner (`vlcache-run
// --jsonl`, docs/contract.md): one process, requests written to its stdin as
// JSON lines, results read from its stdout and matched on id. Prompts are
// built here with the gateway's chat template and tokenizer, so the runner
// sees exactly what the gateway would send to Triton.
type EngineBackend struct {
	model  *chat.Model
	runner string
	args   []string

	cmd   *exec.Cmd
	stdin io.WriteCloser

	writeMu sync.Mutex
	mu      sync.Mutex
	pending map[string]chan engineResult
	done    chan struct{} // closed when the runner's stdout ends
	exitErr error
}

type engineRequest struct {
	ID                  string        `json:"id"`
	InputIDs            []int         `json:"input_ids"`
	Images              []engineImage `json:"images"`
	MaxTokens           int           `json:"max_tokens"`
	Temperature         float64       `json:"temperature"`
	TopP                float64       `json:"top_p"`
	TopK                int           `json:"top_k"`
	Seed                uint64        `json:"seed"`
	StopTokenIDs        []int         `json:"stop_token_ids"`
	Policy              string        `json:"policy"`
	KeepRatio           float64       `json:"keep_ratio"`
	BudgetMode          string        `json:"budget_mode,omitempty"`
	CompressAfter       int           `json:"compress_after"`
	ReturnKeptPositions bool          `json:"return_kept_positions"`
}

type engineImage struct {
	Height int    `json:"height"`
	Width  int    `json:"width"`
	RGBB64 string `json:"rgb_b64"`
}

type engineResult struct {
	ID           string `json:"id"`
	OutputIDs    []int  `json:"output_ids"`
	FinishReason string `json:"finish_reason"`
	Stats        *Stats `json:"stats"`
	Error        string `json:"error"`
}

// StartEngine starts `runner --jsonl --model modelDir args...`; the runner's
// stderr goes to stderr.
func StartEngine(model *chat.Model, runner, modelDir string, args []string, stderr io.Writer) (*EngineBackend, error) {
	full := append([]string{"--jsonl", "--model", modelDir}, args...)
	cmd := exec.Command(runner, full...)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start the engine runner %s: %w", runner, err)
	}
	e := &EngineBackend{model: model, runner: runner, args: full, cmd: cmd, stdin: stdin,
		pending: map[string]chan engineResult{}, done: make(chan struct{})}
	go e.readLoop(stdout)
	return e, nil
}

func (e *EngineBackend) readLoop(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 256<<20) // kept positions make long lines
	for sc.Scan() {
		var r engineResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // not a result line; the runner may log on stdout before it starts
		}
		e.mu.Lock()
		ch := e.pending[r.ID]
		delete(e.pending, r.ID)
		e.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	err := e.cmd.Wait()
	e.mu.Lock()
	if err == nil {
		err = errors.New("the engine runner exited")
	}
	e.exitErr = fmt.Errorf("engine runner: %w", err)
	e.mu.Unlock()
	close(e.done)
}

// Describe names the runner and its arguments.
func (e *EngineBackend) Describe() string {
	return "engine runner: " + e.runner + " " + strings.Join(e.args, " ")
}

// BuildPrompt applies the chat template and tokenizer, with the compression
// point of the protocol.
func BuildPrompt(model *chat.Model, req *Request) (*chat.Prompt, error) {
	return model.Build(req.Messages, len(req.Images), req.CompressAfter)
}

// requestLine encodes one request as a runner input line.
func requestLine(model *chat.Model, req *Request) ([]byte, error) {
	prompt, err := BuildPrompt(model, req)
	if err != nil {
		return nil, err
	}
	line := engineRequest{
		ID: req.ID, InputIDs: prompt.IDs, MaxTokens: req.MaxTokens, TopP: 1, StopTokenIDs: []int{},
		Policy: req.Policy, KeepRatio: req.KeepRatio, BudgetMode: req.BudgetMode,
		CompressAfter: prompt.CompressAfter, ReturnKeptPositions: req.ReturnKept,
		Images: make([]engineImage, len(req.Images)),
	}
	for i, im := range req.Images {
		line.Images[i] = engineImage{Height: im.Height, Width: im.Width, RGBB64: base64.StdEncoding.EncodeToString(im.RGB)}
	}
	b, err := json.Marshal(line)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// toResponse turns a result line into a Response.
func toResponse(model *chat.Model, r engineResult) (*Response, error) {
	if r.Error != "" {
		return nil, fmt.Errorf("engine refused %s: %s", r.ID, r.Error)
	}
	return &Response{
		Text:         decodeAnswer(model, r.OutputIDs),
		OutputIDs:    r.OutputIDs,
		FinishReason: r.FinishReason,
		Stats:        r.Stats,
	}, nil
}

// Generate sends one request and waits for its result.
func (e *EngineBackend) Generate(ctx context.Context, req *Request) (*Response, error) {
	b, err := requestLine(e.model, req)
	if err != nil {
		return nil, err
	}
	ch := make(chan engineResult, 1)
	e.mu.Lock()
	if e.exitErr != nil {
		err := e.exitErr
		e.mu.Unlock()
		return nil, err
	}
	if _, dup := e.pending[req.ID]; dup {
		e.mu.Unlock()
		return nil, fmt.Errorf("request id %q is already in flight", req.ID)
	}
	e.pending[req.ID] = ch
	e.mu.Unlock()

	e.writeMu.Lock()
	_, err = e.stdin.Write(b)
	e.writeMu.Unlock()
	if err != nil {
		e.forget(req.ID)
		return nil, fmt.Errorf("failed to write to the engine runner: %w", err)
	}
	select {
	case r := <-ch:
		return toResponse(e.model, r)
	case <-e.done:
		e.mu.Lock()
		defer e.mu.Unlock()
		return nil, e.exitErr
	case <-ctx.Done():
		// The runner has no cancel line; its result will be dropped.
		e.forget(req.ID)
		return nil, ctx.Err()
	}
}

func (e *EngineBackend) forget(id string) {
	e.mu.Lock()
	delete(e.pending, id)
	e.mu.Unlock()
}

// decodeAnswer turns the tokens before eos into text, as the fixture's
// reference predictions were made (special tokens kept, nothing stripped here).
func decodeAnswer(model *chat.Model, ids []int) string {
	cut := len(ids)
	for i, id := range ids {
		if id == model.Tok.EOSID {
			cut = i
			break
		}
	}
	return model.Tok.Decode(ids[:cut], false)
}

// Kill stops the runner at once (interrupt); pending requests fail.
func (e *EngineBackend) Kill() {
	if e.cmd.Process != nil {
		_ = e.cmd.Process.Kill()
	}
}

// Close ends the runner's input and waits for it to exit.
func (e *EngineBackend) Close() error {
	e.writeMu.Lock()
	err := e.stdin.Close()
	e.writeMu.Unlock()
	<-e.done
	return err
}
