package eval

import (
	"context"

	"github.com/vlcache/vlcache/gateway/internal/chat"
)

// Image is one image of a request: its encoded file (for the gateway, which
// decodes and resizes itself) and its RGB bytes at the model's input size
// (for the engine runner, which takes raw pixels).
type Image struct {
	Encoded []byte
	RGB     []byte
	Height  int
	Width   int
}

// Request is one generation, independent of the backend that serves it.
type Request struct {
	ID string
	// Messages in chat order; image parts are matched to Images in order.
	Messages      []chat.Message
	Images        []*Image
	CompressAfter string // "", chat.CompressAfterImages (P2) or chat.CompressAfterFirstTurn (P3)
	Policy        string
	KeepRatio     float64
	BudgetMode    string // "" = the backend's default
	MaxTokens     int
	ReturnKept    bool // ask for kept positions and layer sparsity (engine runner only)
}

// Response is what came back.
type Response struct {
	Text         string // decoded tokens before eos (not yet stripped)
	OutputIDs    []int  // when the backend exposes them (engine runner)
	FinishReason string
	Stats        *Stats
}

// Stats is the backend's `stats` object (docs/contract.md).
type Stats struct {
	PromptTokens     int          `json:"prompt_tokens"`
	ImageTokens      int          `json:"image_tokens"`
	CompletionTokens int          `json:"completion_tokens"`
	Policy           string       `json:"policy"`
	KeepRatio        float64      `json:"keep_ratio"`
	BudgetMode       string       `json:"budget_mode"`
	KVTokensFull     int64        `json:"kv_tokens_full"`
	KVTokensKept     int64        `json:"kv_tokens_kept"`
	KVBytesFull      int64        `json:"kv_bytes_full"`
	KVBytesKept      int64        `json:"kv_bytes_kept"`
	Layers           []LayerStats `json:"layers,omitempty"`
	KeptPositions    [][][]int    `json:"kept_positions,omitempty"`
	QueueMs          float64      `json:"queue_ms"`
	PrefillMs        float64      `json:"prefill_ms"`
	CompressMs       float64      `json:"compress_ms"`
	DecodeMs         float64      `json:"decode_ms"`
}

// LayerStats is one layer's budget (kept prompt tokens per KV head) and
// measured sparsity (null, or negative, when the policy did not measure it).
type LayerStats struct {
	Budget   int      `json:"budget"`
	Sparsity *float64 `json:"sparsity"`
}

// Backend serves generation requests; Generate is safe for concurrent use.
type Backend interface {
	Generate(ctx context.Context, req *Request) (*Response, error)
	// Describe names the backend for the printed run settings.
	Describe() string
	Close() error
}
