package openai

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

// APIError is an error in OpenAI's shape with its HTTP status.
type APIError struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	Header  http.Header
}

func (e *APIError) Error() string { return e.Message }

// Body is the JSON error envelope.
func (e *APIError) Body() ErrorBody {
	d := ErrorDetail{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		p := e.Param
		d.Param = &p
	}
	if e.Code != "" {
		c := e.Code
		d.Code = &c
	}
	return ErrorBody{Error: d}
}

// StatusClientClosed is nginx's 499: the client went away before the answer.
const StatusClientClosed = 499

// backendInputs are the tensor names a backend error may name; such an error
// is the client's request being unservable (400), anything else is ours (500).
var backendInputs = []string{"input_ids", "images", "max_tokens", "kv_keep_ratio", "kv_policy", "kv_budget_mode",
	"compress_after", "temperature", "top_p", "top_k", "stop_token_ids", "ignore_eos"}

// FromError is the one place that maps an error to a status and an OpenAI
// error type.
func FromError(err error) *APIError {
	var api *APIError
	var adm *admission.Error
	var in *chat.InputError
	var img *images.Error
	var be *triton.BackendError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &api):
		return api
	case errors.As(err, &adm):
		return &APIError{Status: adm.Status, Type: adm.Type, Code: adm.Code, Param: adm.Param, Message: adm.Message, Header: adm.Header}
	case errors.As(err, &in):
		return &APIError{Status: 400, Type: "invalid_request_error", Param: in.Param, Message: in.Message}
	case errors.As(err, &img):
		return &APIError{Status: 400, Type: "invalid_request_error", Param: img.Param, Code: "invalid_image", Message: img.Error()}
	case errors.As(err, &be):
		for _, name := range backendInputs {
			if strings.Contains(be.Message, name) {
				return &APIError{Status: 400, Type: "invalid_request_error", Param: name, Message: "the model cannot serve this request: " + be.Message}
			}
		}
		return &APIError{Status: 500, Type: "server_error", Message: "the model failed: " + be.Message}
	case errors.Is(err, context.Canceled):
		return &APIError{Status: StatusClientClosed, Type: "invalid_request_error", Code: "client_closed", Message: "the client closed the request"}
	case errors.Is(err, context.DeadlineExceeded):
		return &APIError{Status: 504, Type: "timeout", Message: "the request timed out"}
	case errors.Is(err, triton.ErrStreamEnded):
		return &APIError{Status: 502, Type: "server_error", Message: err.Error()}
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable:
			return &APIError{Status: 503, Type: "service_unavailable", Code: "backend_unavailable", Message: "the inference server is unavailable: " + st.Message()}
		case codes.InvalidArgument:
			return &APIError{Status: 400, Type: "invalid_request_error", Message: st.Message()}
		case codes.NotFound:
			return &APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Message: st.Message()}
		case codes.DeadlineExceeded:
			return &APIError{Status: 504, Type: "timeout", Message: st.Message()}
		case codes.ResourceExhausted:
			return &APIError{Status: 503, Type: "service_unavailable", Message: st.Message()}
		case codes.Canceled:
			return &APIError{Status: StatusClientClosed, Type: "invalid_request_error", Code: "client_closed", Message: st.Message()}
		}
	}
	return &APIError{Status: 500, Type: "server_error", Message: err.Error()}
}
