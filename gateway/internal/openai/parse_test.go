package openai

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

const okMsgs = `"messages": [{"role": "user", "content": "hi"}]`

func TestParseAccepts(t *testing.T) {
	req, err := ParseChatRequest([]byte(`{"model": "m", "messages": [
		{"role": "developer", "content": "be brief"},
		{"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
		{"role": "assistant", "content": "a cat", "tool_calls": []}],
		"max_tokens": 7, "max_completion_tokens": 9, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 3, "ignore_eos": true,
		"stop": "END", "n": 1, "stream": true, "stream_options": {"include_usage": true}, "user": "u1",
		"logprobs": false, "presence_penalty": 0, "tools": null,
		"kv_cache": {"keep_ratio": 0.25, "policy": "snapkv", "budget_mode": "paper", "compress_after": "first_turn"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Messages[0].Role != "system" || !req.Messages[1].IsParts || req.Messages[1].Parts[1].ImageURL.Detail != "low" ||
		*req.EffectiveMaxTokens() != 9 || *req.TopK != 40 || req.Stop[0] != "END" || !req.StreamOptions.IncludeUsage ||
		*req.KVCache.KeepRatio != 0.25 || req.KVCache.CompressAfter != "first_turn" || *req.Seed != 3 || !req.IgnoreEOS {
		t.Fatalf("parsed %+v", req)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ body, param string }{
		{`[]`, ""},
		{`{"messages": [{"role": "user", "content": "x"}]}`, "model"},
		{`{"model": "m"}`, "messages"},
		{`{"model": "m", "messages": []}`, "messages"},
		{`{"model": 3, ` + okMsgs + `}`, "model"},
		{`{"model": "m", ` + okMsgs + `, "tools": [{"type": "function"}]}`, "tools"},
		{`{"model": "m", ` + okMsgs + `, "response_format": {"type": "json_object"}}`, "response_format"},
		{`{"model": "m", ` + okMsgs + `, "logprobs": true}`, "logprobs"},
		{`{"model": "m", ` + okMsgs + `, "frobnicate": 1}`, "frobnicate"},
		{`{"model": "m", ` + okMsgs + `, "n": 3}`, "n"},
		{`{"model": "m", ` + okMsgs + `, "temperature": 3}`, "temperature"},
		{`{"model": "m", ` + okMsgs + `, "top_p": 0}`, "top_p"},
		{`{"model": "m", ` + okMsgs + `, "top_k": -1}`, "top_k"},
		{`{"model": "m", ` + okMsgs + `, "ignore_eos": "yes"}`, "ignore_eos"},
		{`{"model": "m", ` + okMsgs + `, "max_tokens": 0}`, "max_tokens"},
		{`{"model": "m", ` + okMsgs + `, "max_tokens": 1.5}`, "max_tokens"},
		{`{"model": "m", ` + okMsgs + `, "stop": ["a", "b", "c", "d", "e"]}`, "stop"},
		{`{"model": "m", ` + okMsgs + `, "stop": 5}`, "stop"},
		{`{"model": "m", ` + okMsgs + `, "stream_options": {"include_usage": true}}`, "stream_options"},
		{`{"model": "m", ` + okMsgs + `, "stream": true, "stream_options": {"bogus": 1}}`, "stream_options.bogus"},
		{`{"model": "m", ` + okMsgs + `, "kv_cache": {"keep_ratio": 0}}`, "kv_cache.keep_ratio"},
		{`{"model": "m", ` + okMsgs + `, "kv_cache": {"keep_ratio": "half"}}`, "kv_cache.keep_ratio"},
		{`{"model": "m", ` + okMsgs + `, "kv_cache": {"compress_after": "middle"}}`, "kv_cache.compress_after"},
		{`{"model": "m", ` + okMsgs + `, "kv_cache": {"budget_mode": "x"}}`, "kv_cache.budget_mode"},
		{`{"model": "m", ` + okMsgs + `, "kv_cache": {"ratio": 1}}`, "kv_cache.ratio"},
		{`{"model": "m", "messages": [{"role": "tool", "content": "x"}]}`, "messages[0].role"},
		{`{"model": "m", "messages": [{"content": "x"}]}`, "messages[0].role"},
		{`{"model": "m", "messages": [{"role": "user"}]}`, "messages[0].content"},
		{`{"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}]}`, "messages[0].extra"},
		{`{"model": "m", "messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}]}`, "messages[0].tool_calls"},
		{`{"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}`, "messages[0].content[0].type"},
		{`{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}`, "messages[0].content[0].image_url.url"},
		{`{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "ultra"}}]}]}`, "messages[0].content[0].image_url.detail"},
		{`{"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, "messages[0].content[0]"},
		{`{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "image_url": {"url": "x"}}]}]}`, "messages[0].content[0].image_url"},
	} {
		t.Run(tc.body, func(t *testing.T) {
			_, err := ParseChatRequest([]byte(tc.body))
			var api *APIError
			if !errors.As(err, &api) || api.Status != 400 || api.Param != tc.param || api.Message == "" {
				t.Fatalf("err = %#v, want a 400 naming %q", err, tc.param)
			}
		})
	}
}

func TestKVRequest(t *testing.T) {
	half := 0.5
	for _, tc := range []struct {
		ratio, policy string
		body          *KVCacheOptions
		wantRatio     float64
		wantPolicy    string
		errParam      string
	}{
		{"", "", nil, 0, "", ""},
		{"0.1", "vlcache", nil, 0.1, "vlcache", ""},
		{"", "", &KVCacheOptions{KeepRatio: &half, Policy: "h2o"}, 0.5, "h2o", ""},
		{" 1 ", "", &KVCacheOptions{KeepRatio: &half}, 1, "", ""},
		{"0", "", nil, 0, "", HeaderKVRatio},
		{"NaN", "", nil, 0, "", HeaderKVRatio},
		{"1e400", "", nil, 0, "", HeaderKVRatio},
		{"", "Bad Policy!", nil, 0, "", HeaderKVPolicy},
	} {
		kv, err := KVRequest(tc.ratio, tc.policy, tc.body)
		if tc.errParam != "" {
			var api *APIError
			if !errors.As(err, &api) || api.Param != tc.errParam {
				t.Errorf("%q %q: err %v, want param %s", tc.ratio, tc.policy, err, tc.errParam)
			}
			continue
		}
		if err != nil || kv.Policy != tc.wantPolicy || (tc.wantRatio == 0) != (kv.KeepRatio == nil) ||
			(kv.KeepRatio != nil && *kv.KeepRatio != tc.wantRatio) {
			t.Errorf("%q %q: got %+v %v", tc.ratio, tc.policy, kv, err)
		}
	}
}

func TestFromError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		typ    string
		param  string
	}{
		{&admission.Error{Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", Message: "slow down"}, 429, "rate_limit_error", ""},
		{&chat.InputError{Param: "messages", Message: "x"}, 400, "invalid_request_error", "messages"},
		{&images.Error{Param: "messages[0].content[1]", Err: errors.New("bad")}, 400, "invalid_request_error", "messages[0].content[1]"},
		{&triton.BackendError{Message: "input_ids longer than the context"}, 400, "invalid_request_error", "input_ids"},
		{&triton.BackendError{Message: "CUDA error"}, 500, "server_error", ""},
		{fmt.Errorf("wrapped: %w", context.Canceled), StatusClientClosed, "invalid_request_error", ""},
		{context.DeadlineExceeded, 504, "timeout", ""},
		{fmt.Errorf("failed to open the Triton stream: %w", status.Error(codes.Unavailable, "connection refused")), 503, "service_unavailable", ""},
		{errors.New("mystery"), 500, "server_error", ""},
	} {
		api := FromError(tc.err)
		if api.Status != tc.status || api.Type != tc.typ || api.Param != tc.param || !strings.Contains(api.Message, "") {
			t.Errorf("%v: got %+v", tc.err, api)
		}
		if b := api.Body(); b.Error.Message == "" || (tc.param != "" && *b.Error.Param != tc.param) {
			t.Errorf("%v: body %+v", tc.err, b)
		}
	}
}

func FuzzParseChatRequest(f *testing.F) {
	f.Add([]byte(`{"model": "m", ` + okMsgs + `}`))
	f.Add([]byte(`{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "kv_cache": {"keep_ratio": 0.1}}`))
	f.Add([]byte(`{"stop": ["a"], "n": 1, "max_tokens": 1e9}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseChatRequest(body)
		if err != nil {
			var api *APIError
			if !errors.As(err, &api) || api.Status != 400 || api.Message == "" {
				t.Fatalf("error %v is not an OpenAI 400", err)
			}
			return
		}
		if req.Model == "" || len(req.Messages) == 0 {
			t.Fatalf("accepted a request without model or messages: %s", body)
		}
		for _, m := range req.Messages {
			if !m.IsParts && m.Text == nil {
				t.Fatalf("message without content accepted: %s", body)
			}
		}
	})
}

func FuzzKVHeaders(f *testing.F) {
	f.Add("0.1", "vlcache")
	f.Add("1", "")
	f.Add("-0", "x y")
	f.Fuzz(func(t *testing.T, ratio, policy string) {
		kv, err := KVRequest(ratio, policy, nil)
		if err != nil {
			return
		}
		if kv.KeepRatio != nil && !(*kv.KeepRatio > 0 && *kv.KeepRatio <= 1) {
			t.Fatalf("ratio %v accepted", *kv.KeepRatio)
		}
	})
}
