// Package chat turns OpenAI-style messages into the prompt ids the backend
// takes: the model's Jinja chat template (tokenizer_config.json) rendered with
// gonja, tokenised, and each image placeholder expanded to the model's number
// of image tokens. It also finds the compression point of the context-first
// protocols.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"

	"github.com/vlcache/vlcache/gateway/internal/tokenizer"
)

func init() {
	// gonja logs every render through logrus at debug level; the gateway has
	// its own structured logs.
	gonja.SetLoggerOutput(io.Discard)
}

// Model is what the gateway needs of one model directory to build prompts.
type Model struct {
	Tok            *tokenizer.Tokenizer
	template       *exec.Template
	ImageToken     string
	ImageTokenID   int
	TokensPerImage int // image features per image: the placeholder's expansion
	ContextLength  int // max_position_embeddings of the language model (0: unknown)
}

type modelConfig struct {
	ImageTokenIndex *int   `json:"image_token_index"`
	ImageTokenID    *int   `json:"image_token_id"`
	ImageSeqLength  int    `json:"image_seq_length"`
	FeatureStrategy string `json:"vision_feature_select_strategy"`
	VisionConfig    struct {
		ImageSize int `json:"image_size"`
		PatchSize int `json:"patch_size"`
	} `json:"vision_config"`
	TextConfig struct {
		MaxPositionEmbeddings int `json:"max_position_embeddings"`
	} `json:"text_config"`
}

// Load reads config.json, tokenizer.json and tokenizer_config.json.
func Load(modelDir string) (*Model, error) {
	tok, err := tokenizer.Load(modelDir)
	if err != nil {
		return nil, err
	}
	var tcfg tokenizer.Config
	if err := readJSON(filepath.Join(modelDir, "tokenizer_config.json"), &tcfg); err != nil {
		return nil, err
	}
	if tcfg.ChatTemplate == "" {
		// Newer checkpoints keep the template in its own file.
		if b, err := os.ReadFile(filepath.Join(modelDir, "chat_template.jinja")); err == nil {
			tcfg.ChatTemplate = tokenizer.ChatTemplate(b)
		} else {
			return nil, fmt.Errorf("%s has no chat_template", modelDir)
		}
	}
	var mcfg modelConfig
	if err := readJSON(filepath.Join(modelDir, "config.json"), &mcfg); err != nil {
		return nil, err
	}
	return New(tok, string(tcfg.ChatTemplate), mcfg)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("failed to parse %s: %w", path, err)
	}
	return nil
}

// New builds a Model from its parts (Load reads them from a directory).
func New(tok *tokenizer.Tokenizer, template string, mcfg modelConfig) (*Model, error) {
	tpl, err := compileTemplate(template)
	if err != nil {
		return nil, err
	}
	m := &Model{Tok: tok, template: tpl, ImageTokenID: -1, ContextLength: mcfg.TextConfig.MaxPositionEmbeddings}
	switch {
	case mcfg.ImageTokenIndex != nil:
		m.ImageTokenID = *mcfg.ImageTokenIndex
	case mcfg.ImageTokenID != nil:
		m.ImageTokenID = *mcfg.ImageTokenID
	}
	if m.ImageTokenID >= 0 {
		m.ImageToken = tok.Decode([]int{m.ImageTokenID}, false)
		m.TokensPerImage = mcfg.ImageSeqLength
		if m.TokensPerImage == 0 {
			v := mcfg.VisionConfig
			if v.ImageSize <= 0 || v.PatchSize <= 0 {
				return nil, errors.New("config.json gives neither image_seq_length nor vision_config image_size/patch_size")
			}
			m.TokensPerImage = (v.ImageSize / v.PatchSize) * (v.ImageSize / v.PatchSize)
			if mcfg.FeatureStrategy == "full" {
				m.TokensPerImage++ // the CLS feature is kept
			}
		}
	}
	return m, nil
}

func compileTemplate(source string) (*exec.Template, error) {
	cfg := config.New()
	// transformers renders chat templates with these two options on.
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = true
	env := &exec.Environment{
		Context:           exec.EmptyContext().Update(builtins.GlobalFunctions).Update(builtins.GlobalVariables),
		Filters:           builtins.Filters,
		Tests:             builtins.Tests,
		ControlStructures: builtins.ControlStructures,
		Methods:           builtins.Methods,
	}
	const root = "chat_template"
	loader, err := loaders.NewShiftedLoader(root, strings.NewReader(source), noFiles{})
	if err != nil {
		return nil, fmt.Errorf("failed to load chat template: %w", err)
	}
	tpl, err := exec.NewTemplate(root, cfg, loader, env)
	if err != nil {
		return nil, fmt.Errorf("failed to parse chat template: %w", err)
	}
	return tpl, nil
}

// noFiles refuses includes: a chat template has no business reading files.
type noFiles struct{}

func (noFiles) Read(path string) (io.Reader, error) {
	return nil, fmt.Errorf("chat templates may not include %q", path)
}
func (noFiles) Resolve(path string) (string, error) { return path, nil }
func (noFiles) Inherit(string) (loaders.Loader, error) {
	return noFiles{}, nil
}

// Part is one piece of a message's content.
type Part struct {
	Type string // "text" or "image"
	Text string
}

// Message is a chat message. A message with Parts == nil is rendered with
// its content as a plain string, as the OpenAI API allows.
type Message struct {
	Role  string
	Text  string
	Parts []Part
}

// Compression points of the context-first protocols.
const (
	CompressAfterPrompt    = "prompt"     // compress once the whole prompt is in the cache
	CompressAfterImages    = "images"     // P2: compress right after the last image token
	CompressAfterFirstTurn = "first_turn" // P3: compress after the first user turn and its generation prompt
)

// Prompt is a rendered, tokenised prompt.
type Prompt struct {
	Text          string // the rendered template
	IDs           []int  // with image placeholders expanded
	NumImages     int
	ImageTokens   int
	CompressAfter int // prompt tokens before the compression point; 0 = the whole prompt
}

// InputError is a problem with the client's messages (an HTTP 400).
type InputError struct {
	Param   string
	Message string
}

func (e *InputError) Error() string { return e.Message }

// Render runs the chat template.
func (m *Model) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	list := make([]any, len(msgs))
	for i, msg := range msgs {
		var content any = msg.Text
		if msg.Parts != nil {
			parts := make([]any, len(msg.Parts))
			for j, p := range msg.Parts {
				if p.Type == "image" {
					parts[j] = map[string]any{"type": "image"}
				} else {
					parts[j] = map[string]any{"type": "text", "text": p.Text}
				}
			}
			content = parts
		}
		list[i] = map[string]any{"role": msg.Role, "content": content}
	}
	var raised error
	ctx := exec.NewContext(map[string]any{
		"messages":              list,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             m.Tok.BOS,
		"eos_token":             m.Tok.EOS,
		"raise_exception": func(msg string) (string, error) {
			raised = &InputError{Param: "messages", Message: msg}
			return "", raised
		},
	})
	out, err := m.template.ExecuteToString(ctx)
	if raised != nil {
		return "", raised
	}
	if err != nil {
		return "", fmt.Errorf("failed to render the chat template: %w", err)
	}
	return out, nil
}

// encode tokenises rendered text; the tokenizer's special tokens (BOS) are
// added unless the template already wrote the BOS text itself.
func (m *Model) encode(text string, first bool) []int {
	addSpecial := first && (m.Tok.BOS == "" || !strings.HasPrefix(text, m.Tok.BOS))
	return m.Tok.Encode(text, addSpecial)
}

// Build renders messages with the generation prompt and returns the ids for
// the backend. numImages is how many images the request carries, in order of
// appearance; the template must place exactly that many placeholders.
func (m *Model) Build(msgs []Message, numImages int, compressAfter string) (*Prompt, error) {
	text, err := m.Render(msgs, true)
	if err != nil {
		return nil, err
	}
	var ids []int
	point := 0
	switch compressAfter {
	case "", CompressAfterPrompt, CompressAfterImages:
		ids = m.encode(text, true)
	case CompressAfterFirstTurn:
		first := firstTurn(msgs)
		if first < 0 {
			return nil, &InputError{Param: "kv_cache.compress_after", Message: "compress_after \"first_turn\" needs a user message"}
		}
		head, err := m.Render(msgs[:first+1], true)
		if err != nil {
			return nil, err
		}
		// The later turns go over the compressed cache, so the head must be
		// exactly the start of the full prompt, and is tokenised on its own.
		if !strings.HasPrefix(text, head) {
			return nil, &InputError{Param: "kv_cache.compress_after",
				Message: "this model's chat template does not render the first turn as a prefix of the conversation; compress_after \"first_turn\" is unavailable"}
		}
		ids = m.encode(head, true)
		point = len(ids)
		ids = append(ids, m.encode(text[len(head):], false)...)
	default:
		return nil, &InputError{Param: "kv_cache.compress_after",
			Message: fmt.Sprintf("compress_after %q is not one of prompt, images, first_turn", compressAfter)}
	}
	p := &Prompt{Text: text, NumImages: numImages}
	placeholders := 0
	for _, id := range ids {
		if id == m.ImageTokenID {
			placeholders++
		}
	}
	if numImages > 0 && m.ImageTokenID < 0 {
		return nil, &InputError{Param: "messages", Message: "this model does not take images"}
	}
	if placeholders != numImages {
		return nil, &InputError{Param: "messages", Message: fmt.Sprintf(
			"the prompt has %d image placeholders (%q) but the request has %d images; do not write %q in text",
			placeholders, m.ImageToken, numImages, m.ImageToken)}
	}
	out := make([]int, 0, len(ids)+placeholders*(m.TokensPerImage-1))
	lastImageEnd := 0
	for i, id := range ids {
		if i == point && point > 0 {
			p.CompressAfter = len(out)
		}
		if id == m.ImageTokenID {
			for k := 0; k < m.TokensPerImage; k++ {
				out = append(out, id)
			}
			lastImageEnd = len(out)
			continue
		}
		out = append(out, id)
	}
	p.IDs = out
	p.ImageTokens = placeholders * m.TokensPerImage
	if compressAfter == CompressAfterImages {
		if numImages == 0 {
			return nil, &InputError{Param: "kv_cache.compress_after", Message: "compress_after \"images\" needs at least one image"}
		}
		p.CompressAfter = lastImageEnd
	}
	if compressAfter == CompressAfterFirstTurn && point >= len(ids) {
		p.CompressAfter = 0 // one turn only: the same as compressing after the prompt
	}
	return p, nil
}

// firstTurn is the index of the first user message.
func firstTurn(msgs []Message) int {
	for i, m := range msgs {
		if m.Role == "user" {
			return i
		}
	}
	return -1
}
