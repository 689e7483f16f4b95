package eval

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Request headers and body extension of the gateway (docs/contract.md,
// ARCHITECTURE "Gateway API").
const (
	HeaderKeepRatio = "X-KV-Cache-Ratio"
	HeaderPolicy    = "X-KV-Cache-Policy"
)

// GatewayBackend sends requests to a running gateway through the OpenAI SDK:
// keep ratio and policy as headers, the compression point and budget mode in
// the `kv_cache` body extension. The gateway builds the prompt itself.
type GatewayBackend struct {
	client  openai.Client
	baseURL string
	model   string
}

// NewGateway makes a client for baseURL (e.g. http://127.0.0.1:8080/v1).
func NewGateway(baseURL, apiKey, model string) *GatewayBackend {
	if apiKey == "" {
		apiKey = "unused" // the SDK insists on a key; an open gateway ignores it
	}
	c := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(apiKey), option.WithMaxRetries(0))
	return &GatewayBackend{client: c, baseURL: baseURL, model: model}
}

// Describe names the gateway and model.
func (g *GatewayBackend) Describe() string {
	return fmt.Sprintf("gateway: %s model %s (OpenAI API; %s / %s headers, kv_cache body extension)",
		g.baseURL, g.model, HeaderKeepRatio, HeaderPolicy)
}

// Close has nothing to release.
func (g *GatewayBackend) Close() error { return nil }

// ChatParams converts a request to the SDK's parameters and options; the
// load generator uses it too.
func ChatParams(model string, req *Request) (openai.ChatCompletionNewParams, []option.RequestOption, error) {
	params := openai.ChatCompletionNewParams{
		Model:       model,
		MaxTokens:   openai.Int(int64(req.MaxTokens)),
		Temperature: openai.Float(0),
	}
	next := 0
	for _, m := range req.Messages {
		switch m.Role {
		case "user":
			if m.Parts == nil {
				params.Messages = append(params.Messages, openai.UserMessage(m.Text))
				continue
			}
			var parts []openai.ChatCompletionContentPartUnionParam
			for _, p := range m.Parts {
				if p.Type != "image" {
					parts = append(parts, openai.TextContentPart(p.Text))
					continue
				}
				if next >= len(req.Images) {
					return params, nil, errors.New("more image parts than images")
				}
				parts = append(parts, openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{
					URL: DataURL(req.Images[next].Encoded)}))
				next++
			}
			params.Messages = append(params.Messages, openai.UserMessage(parts))
		case "assistant":
			params.Messages = append(params.Messages, openai.AssistantMessage(m.Text))
		case "system":
			params.Messages = append(params.Messages, openai.SystemMessage(m.Text))
		default:
			return params, nil, fmt.Errorf("role %q is not supported", m.Role)
		}
	}
	opts := []option.RequestOption{
		option.WithHeader(HeaderKeepRatio, strconv.FormatFloat(req.KeepRatio, 'g', -1, 64)),
		option.WithHeader(HeaderPolicy, req.Policy),
	}
	ext := map[string]any{}
	if req.CompressAfter != "" {
		ext["compress_after"] = req.CompressAfter
	}
	if req.BudgetMode != "" {
		ext["budget_mode"] = req.BudgetMode
	}
	if len(ext) > 0 {
		opts = append(opts, option.WithJSONSet("kv_cache", ext))
	}
	return params, opts, nil
}

// DataURL embeds an encoded image in a data: URL.
func DataURL(encoded []byte) string {
	return "data:" + http.DetectContentType(encoded) + ";base64," + base64.StdEncoding.EncodeToString(encoded)
}

// Generate sends one non-streaming chat completion.
func (g *GatewayBackend) Generate(ctx context.Context, req *Request) (*Response, error) {
	if req.ReturnKept {
		req2 := *req
		req2.ReturnKept = false // the OpenAI API has no field for it
		req = &req2
	}
	params, opts, err := ChatParams(g.model, req)
	if err != nil {
		return nil, err
	}
	resp, err := g.client.Chat.Completions.New(ctx, params, opts...)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if len(resp.Choices) == 0 {
		return nil, errors.New("gateway: no choices in the response")
	}
	out := &Response{Text: resp.Choices[0].Message.Content, FinishReason: resp.Choices[0].FinishReason}
	out.Stats = KVStatsFromUsage(resp.Usage.RawJSON())
	return out, nil
}

// KVUsage is the gateway's `usage.kv_cache` extension.
type KVUsage struct {
	Policy     string  `json:"policy"`
	KeepRatio  float64 `json:"keep_ratio"`
	TokensFull int64   `json:"tokens_full"`
	TokensKept int64   `json:"tokens_kept"`
	BytesFull  int64   `json:"bytes_full"`
	BytesKept  int64   `json:"bytes_kept"`
}

// KVStatsFromUsage reads `usage.kv_cache` (and the prompt token count) from
// a raw usage object; nil when absent.
func KVStatsFromUsage(rawUsage string) *Stats {
	if rawUsage == "" {
		return nil
	}
	var u struct {
		PromptTokens     int      `json:"prompt_tokens"`
		CompletionTokens int      `json:"completion_tokens"`
		KVCache          *KVUsage `json:"kv_cache"`
	}
	if err := json.Unmarshal([]byte(rawUsage), &u); err != nil || u.KVCache == nil {
		return nil
	}
	k := u.KVCache
	return &Stats{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, Policy: k.Policy, KeepRatio: k.KeepRatio,
		KVTokensFull: k.TokensFull, KVTokensKept: k.TokensKept, KVBytesFull: k.BytesFull, KVBytesKept: k.BytesKept}
}
