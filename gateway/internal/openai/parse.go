package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/vlcache/vlcache/gateway/internal/admission"
)

// unsupported are OpenAI parameters this gateway does not implement. Sending
// one with a value that would change the result is a 400 naming it; its
// neutral value (null, false, 0, empty) is accepted since it asks for nothing.
var unsupported = map[string]bool{
	"tools": true, "tool_choice": true, "parallel_tool_calls": true, "functions": true, "function_call": true,
	"response_format": true, "logprobs": true, "top_logprobs": true, "logit_bias": true,
	"presence_penalty": true, "frequency_penalty": true, "audio": true, "modalities": true,
	"prediction": true, "store": true, "metadata": true, "reasoning_effort": true, "service_tier": true,
	"web_search_options": true, "verbosity": true, "prompt_cache_key": true, "safety_identifier": true,
}

var budgetModes = []string{"exact", "paper"}
var compressPoints = []string{"prompt", "images", "first_turn"}

func invalid(param, format string, args ...any) *APIError {
	return &APIError{Status: 400, Type: "invalid_request_error", Param: param, Message: fmt.Sprintf(format, args...)}
}

func isNeutral(raw json.RawMessage) bool {
	switch s := string(bytes.TrimSpace(raw)); s {
	case "null", "false", "0", "0.0", `""`, "[]", "{}":
		return true
	}
	return false
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func objectKeys(raw json.RawMessage, param string) (map[string]json.RawMessage, *APIError) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		if param == "" {
			return nil, &APIError{Status: 400, Type: "invalid_request_error",
				Message: "the request body must be a JSON object: " + jsonProblem(err)}
		}
		return nil, invalid(param, "%s must be an object", param)
	}
	return m, nil
}

func jsonProblem(err error) string {
	if err == nil {
		return "got null"
	}
	return err.Error()
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// ParseChatRequest reads a request body strictly: an unknown or unsupported
// parameter, a wrong type or an out-of-range value is a 400 naming it.
func ParseChatRequest(body []byte) (*ChatCompletionRequest, error) {
	top, apiErr := objectKeys(body, "")
	if apiErr != nil {
		return nil, apiErr
	}
	req := &ChatCompletionRequest{}
	var messages json.RawMessage
	for key, raw := range top {
		var err *APIError
		switch key {
		case "model":
			err = decode(raw, key, "a string", &req.Model)
		case "messages":
			messages = raw
		case "max_tokens":
			req.MaxTokens, err = positiveInt(raw, key)
		case "max_completion_tokens":
			req.MaxCompletionTokens, err = positiveInt(raw, key)
		case "temperature":
			req.Temperature, err = number(raw, key, 0, 2, true)
		case "top_p":
			req.TopP, err = number(raw, key, 0, 1, false)
		case "top_k":
			var k *int
			if k, err = optionalInt(raw, key); err == nil && k != nil && *k < 0 {
				err = invalid(key, "top_k must be >= 0 (0 turns it off)")
			}
			req.TopK = k
		case "ignore_eos":
			if !isNull(raw) {
				err = decode(raw, key, "a boolean", &req.IgnoreEOS)
			}
		case "seed":
			if !isNull(raw) {
				var s int64
				err = decode(raw, key, "an integer", &s)
				req.Seed = &s
			}
		case "stop":
			req.Stop, err = parseStop(raw)
		case "n":
			var n *int
			if n, err = optionalInt(raw, key); err == nil && n != nil && *n != 1 {
				err = invalid(key, "n=%d is not supported: only one choice (n=1) per request", *n)
			}
			req.N = n
		case "stream":
			if !isNull(raw) {
				err = decode(raw, key, "a boolean", &req.Stream)
			}
		case "stream_options":
			req.StreamOptions, err = parseStreamOptions(raw)
		case "user":
			if !isNull(raw) {
				err = decode(raw, key, "a string", &req.User)
			}
		case "kv_cache":
			req.KVCache, err = parseKVCache(raw)
		default:
			if unsupported[key] {
				if !isNeutral(raw) {
					err = &APIError{Status: 400, Type: "invalid_request_error", Param: key, Code: "unsupported_parameter",
						Message: fmt.Sprintf("%s is not supported by this server", key)}
				}
			} else {
				err = &APIError{Status: 400, Type: "invalid_request_error", Param: key, Code: "unknown_parameter",
					Message: fmt.Sprintf("unrecognized request argument: %s", key)}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if req.Model == "" {
		return nil, invalid("model", "model is required")
	}
	if messages == nil || isNull(messages) {
		return nil, invalid("messages", "messages is required")
	}
	var err *APIError
	if req.Messages, err = parseMessages(messages); err != nil {
		return nil, err
	}
	if req.StreamOptions != nil && !req.Stream {
		return nil, invalid("stream_options", "stream_options is only allowed when stream is true")
	}
	return req, nil
}

func decode(raw json.RawMessage, param, what string, v any) *APIError {
	if err := json.Unmarshal(raw, v); err != nil {
		return invalid(param, "%s must be %s", param, what)
	}
	return nil
}

func optionalInt(raw json.RawMessage, param string) (*int, *APIError) {
	if isNull(raw) {
		return nil, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<31 {
		return nil, invalid(param, "%s must be an integer", param)
	}
	v := int(f)
	return &v, nil
}

func positiveInt(raw json.RawMessage, param string) (*int, *APIError) {
	v, err := optionalInt(raw, param)
	if err == nil && v != nil && *v < 1 {
		return nil, invalid(param, "%s must be at least 1", param)
	}
	return v, err
}

func number(raw json.RawMessage, param string, lo, hi float64, loInclusive bool) (*float64, *APIError) {
	if isNull(raw) {
		return nil, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, invalid(param, "%s must be a number", param)
	}
	if f > hi || f < lo || (!loInclusive && f == lo) {
		open := "["
		if !loInclusive {
			open = "("
		}
		return nil, invalid(param, "%s=%v is outside %s%v, %v]", param, f, open, lo, hi)
	}
	return &f, nil
}

// MaxStops is OpenAI's limit on stop sequences.
const MaxStops = 4

func parseStop(raw json.RawMessage) ([]string, *APIError) {
	if isNull(raw) {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("stop", "stop must be a string or a list of strings")
	}
	if len(list) > MaxStops {
		return nil, invalid("stop", "stop takes at most %d sequences, got %d", MaxStops, len(list))
	}
	for i, s := range list {
		if s == "" {
			return nil, invalid(fmt.Sprintf("stop[%d]", i), "stop sequences must not be empty")
		}
	}
	return list, nil
}

func parseStreamOptions(raw json.RawMessage) (*StreamOptions, *APIError) {
	if isNull(raw) {
		return nil, nil
	}
	m, err := objectKeys(raw, "stream_options")
	if err != nil {
		return nil, err
	}
	so := &StreamOptions{}
	for k, v := range m {
		switch k {
		case "include_usage":
			if err := decode(v, "stream_options.include_usage", "a boolean", &so.IncludeUsage); err != nil {
				return nil, err
			}
		case "include_obfuscation":
			if !isNeutral(v) {
				return nil, invalid("stream_options."+k, "stream_options.%s is not supported", k)
			}
		default:
			return nil, invalid("stream_options."+k, "unrecognized argument stream_options.%s", k)
		}
	}
	return so, nil
}

func parseKVCache(raw json.RawMessage) (*KVCacheOptions, *APIError) {
	if isNull(raw) {
		return nil, nil
	}
	m, err := objectKeys(raw, "kv_cache")
	if err != nil {
		return nil, err
	}
	kv := &KVCacheOptions{}
	for k, v := range m {
		p := "kv_cache." + k
		switch k {
		case "keep_ratio":
			r, err := number(v, p, 0, 1, false)
			if err != nil {
				return nil, err
			}
			kv.KeepRatio = r
		case "policy":
			if err := decode(v, p, "a string", &kv.Policy); err != nil {
				return nil, err
			}
		case "budget_mode":
			if err := decode(v, p, "a string", &kv.BudgetMode); err != nil {
				return nil, err
			}
			if kv.BudgetMode != "" && !contains(budgetModes, kv.BudgetMode) {
				return nil, invalid(p, "%s must be one of %s", p, strings.Join(budgetModes, ", "))
			}
		case "compress_after":
			if err := decode(v, p, "a string", &kv.CompressAfter); err != nil {
				return nil, err
			}
			if kv.CompressAfter != "" && !contains(compressPoints, kv.CompressAfter) {
				return nil, invalid(p, "%s must be one of %s", p, strings.Join(compressPoints, ", "))
			}
		default:
			return nil, invalid(p, "unrecognized argument %s", p)
		}
	}
	return kv, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func parseMessages(raw json.RawMessage) ([]Message, *APIError) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("messages", "messages must be a list of message objects")
	}
	if len(list) == 0 {
		return nil, invalid("messages", "messages must not be empty")
	}
	out := make([]Message, len(list))
	for i, r := range list {
		p := fmt.Sprintf("messages[%d]", i)
		m, err := objectKeys(r, p)
		if err != nil {
			return nil, err
		}
		msg := Message{}
		var content json.RawMessage
		for k, v := range m {
			switch k {
			case "role":
				if err := decode(v, join(p, k), "a string", &msg.Role); err != nil {
					return nil, err
				}
			case "content":
				content = v
			case "name":
				if err := decode(v, join(p, k), "a string", &msg.Name); err != nil {
					return nil, err
				}
			case "tool_calls", "tool_call_id", "function_call", "refusal", "audio":
				if !isNeutral(v) {
					return nil, invalid(join(p, k), "%s is not supported by this server", join(p, k))
				}
			default:
				return nil, invalid(join(p, k), "unrecognized argument %s", join(p, k))
			}
		}
		switch msg.Role {
		case "system", "user", "assistant":
		case "developer":
			msg.Role = "system" // OpenAI's newer name for system instructions
		case "":
			return nil, invalid(p+".role", "%s.role is required", p)
		default:
			return nil, invalid(p+".role", "role %q is not supported (system, developer, user, assistant)", msg.Role)
		}
		if content == nil || isNull(content) {
			return nil, invalid(p+".content", "%s.content is required", p)
		}
		var text string
		if json.Unmarshal(content, &text) == nil {
			msg.Text = &text
		} else {
			parts, err := parseParts(content, p+".content", msg.Role)
			if err != nil {
				return nil, err
			}
			msg.Parts, msg.IsParts = parts, true
		}
		out[i] = msg
	}
	return out, nil
}

func parseParts(raw json.RawMessage, p, role string) ([]ContentPart, *APIError) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid(p, "%s must be a string or a list of content parts", p)
	}
	parts := make([]ContentPart, len(list))
	for j, r := range list {
		pp := fmt.Sprintf("%s[%d]", p, j)
		m, err := objectKeys(r, pp)
		if err != nil {
			return nil, err
		}
		var typ string
		if t, ok := m["type"]; !ok || json.Unmarshal(t, &typ) != nil {
			return nil, invalid(pp+".type", "%s.type is required", pp)
		}
		part := ContentPart{Type: typ}
		for k, v := range m {
			switch {
			case k == "type":
			case k == "text" && typ == "text":
				if err := decode(v, join(pp, k), "a string", &part.Text); err != nil {
					return nil, err
				}
			case k == "image_url" && typ == "image_url":
				iu, err := parseImageURL(v, join(pp, k))
				if err != nil {
					return nil, err
				}
				part.ImageURL = iu
			default:
				return nil, invalid(join(pp, k), "unrecognized argument %s for a %q part", join(pp, k), typ)
			}
		}
		switch typ {
		case "text":
		case "image_url":
			if role != "user" {
				return nil, invalid(pp, "images are only accepted in user messages")
			}
			if part.ImageURL == nil || part.ImageURL.URL == "" {
				return nil, invalid(pp+".image_url.url", "%s.image_url.url is required", pp)
			}
		default:
			return nil, invalid(pp+".type", "content part type %q is not supported (text, image_url)", typ)
		}
		parts[j] = part
	}
	return parts, nil
}

func parseImageURL(raw json.RawMessage, p string) (*ImageURL, *APIError) {
	m, err := objectKeys(raw, p)
	if err != nil {
		return nil, err
	}
	iu := &ImageURL{}
	for k, v := range m {
		switch k {
		case "url":
			if err := decode(v, p+".url", "a string", &iu.URL); err != nil {
				return nil, err
			}
		case "detail":
			if err := decode(v, p+".detail", "a string", &iu.Detail); err != nil {
				return nil, err
			}
			switch iu.Detail {
			case "", "auto", "low", "high":
			default:
				return nil, invalid(p+".detail", "detail must be auto, low or high")
			}
		default:
			return nil, invalid(p+"."+k, "unrecognized argument %s.%s", p, k)
		}
	}
	return iu, nil
}

// Header names of the keep-ratio extension.
const (
	HeaderKVRatio  = "X-KV-Cache-Ratio"
	HeaderKVPolicy = "X-KV-Cache-Policy"
)

// KVRequest merges the X-KV-Cache-* headers with the body's kv_cache
// extension; a header wins over the body.
func KVRequest(ratioHeader, policyHeader string, body *KVCacheOptions) (admission.KVRequest, error) {
	var kv admission.KVRequest
	if body != nil {
		kv.KeepRatio, kv.Policy = body.KeepRatio, body.Policy
	}
	if s := strings.TrimSpace(ratioHeader); s != "" {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(r) || math.IsInf(r, 0) {
			return kv, &APIError{Status: 400, Type: "invalid_request_error", Param: HeaderKVRatio, Code: "invalid_kv_cache_ratio",
				Message: fmt.Sprintf("%s: %q is not a number", HeaderKVRatio, ratioHeader)}
		}
		if !(r > 0 && r <= 1) {
			return kv, &APIError{Status: 400, Type: "invalid_request_error", Param: HeaderKVRatio, Code: "invalid_kv_cache_ratio",
				Message: fmt.Sprintf("%s: %v is outside (0, 1] (the fraction of the KV cache kept)", HeaderKVRatio, r)}
		}
		kv.KeepRatio = &r
	}
	if s := strings.TrimSpace(policyHeader); s != "" {
		for _, c := range s {
			if !(c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
				return kv, &APIError{Status: 400, Type: "invalid_request_error", Param: HeaderKVPolicy, Code: "invalid_kv_cache_policy",
					Message: fmt.Sprintf("%s: %q is not a policy name", HeaderKVPolicy, policyHeader)}
			}
		}
		kv.Policy = s
	}
	return kv, nil
}

// EffectiveMaxTokens picks max_completion_tokens over the older max_tokens.
func (r *ChatCompletionRequest) EffectiveMaxTokens() *int {
	if r.MaxCompletionTokens != nil {
		return r.MaxCompletionTokens
	}
	return r.MaxTokens
}
