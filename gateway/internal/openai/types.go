// Package openai holds the OpenAI chat-completions wire types, the pure
// converters between them and the gateway's own request, and the one mapping
// from errors to HTTP status and OpenAI error bodies. It has no HTTP code.
package openai

import "encoding/json"

// ChatCompletionRequest is the accepted subset of the OpenAI request, plus
// the extensions top_k, ignore_eos (as in vLLM) and kv_cache.
type ChatCompletionRequest struct {
	Model               string          `json:"model"`
	Messages            []Message       `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                *int            `json:"top_k"`
	IgnoreEOS           bool            `json:"ignore_eos"`
	Seed                *int64          `json:"seed"`
	Stop                []string        `json:"-"` // string or list on the wire
	N                   *int            `json:"n"`
	Stream              bool            `json:"stream"`
	StreamOptions       *StreamOptions  `json:"stream_options"`
	User                string          `json:"user"`
	KVCache             *KVCacheOptions `json:"kv_cache"`
}

type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// KVCacheOptions is the body extension choosing the KV-cache compression.
type KVCacheOptions struct {
	KeepRatio     *float64 `json:"keep_ratio"`
	Policy        string   `json:"policy"`
	BudgetMode    string   `json:"budget_mode"`
	CompressAfter string   `json:"compress_after"`
}

// Message is a chat message; Content is nil, a string, or parts.
type Message struct {
	Role    string
	Text    *string
	Parts   []ContentPart
	Name    string
	IsParts bool
}

type ContentPart struct {
	Type     string
	Text     string
	ImageURL *ImageURL
}

type ImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail"`
}

// ChatCompletion is the non-streamed response.
type ChatCompletion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

type Choice struct {
	Index        int             `json:"index"`
	Message      ResponseMessage `json:"message"`
	FinishReason string          `json:"finish_reason"`
	Logprobs     *struct{}       `json:"logprobs"`
}

type ResponseMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Usage counts tokens; KVCache is the extension reporting the compression.
type Usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
	KVCache             *KVCacheUsage        `json:"kv_cache,omitempty"`
}

type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
	ImageTokens  int `json:"image_tokens"`
}

type KVCacheUsage struct {
	Policy     string  `json:"policy"`
	KeepRatio  float64 `json:"keep_ratio"`
	TokensFull int64   `json:"tokens_full"`
	TokensKept int64   `json:"tokens_kept"`
	BytesFull  int64   `json:"bytes_full"`
	BytesKept  int64   `json:"bytes_kept"`
}

// ChatCompletionChunk is one streamed event.
type ChatCompletionChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	Choices           []ChunkChoice `json:"choices"`
	Usage             *Usage        `json:"usage,omitempty"`
	SystemFingerprint string        `json:"system_fingerprint,omitempty"`
}

type ChunkChoice struct {
	Index        int       `json:"index"`
	Delta        Delta     `json:"delta"`
	FinishReason *string   `json:"finish_reason"`
	Logprobs     *struct{} `json:"logprobs"`
}

type Delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// Model is an entry of GET /v1/models.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type ModelList struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}

// ErrorBody is OpenAI's error envelope.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Chunk builders keep the handler free of wire details.

func NewChunk(id, model string, created int64) ChatCompletionChunk {
	return ChatCompletionChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model}
}

func RoleChunk(base ChatCompletionChunk) ChatCompletionChunk {
	empty := ""
	base.Choices = []ChunkChoice{{Delta: Delta{Role: "assistant", Content: &empty}}}
	return base
}

func ContentChunk(base ChatCompletionChunk, text string) ChatCompletionChunk {
	base.Choices = []ChunkChoice{{Delta: Delta{Content: &text}}}
	return base
}

func FinishChunk(base ChatCompletionChunk, reason string) ChatCompletionChunk {
	base.Choices = []ChunkChoice{{Delta: Delta{}, FinishReason: &reason}}
	return base
}

func UsageChunk(base ChatCompletionChunk, u *Usage) ChatCompletionChunk {
	base.Choices = []ChunkChoice{}
	base.Usage = u
	return base
}

var _ = json.Marshal
