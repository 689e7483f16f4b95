package eval

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

var constexprLine = regexp.MustCompile(`^\s*constexpr\s+[\w:]+\s+(k\w+)\s*=\s*([^;]+);\s*(//\s*(.*))?$`)

// PolicyConstants reads the engine's named policy choices (the constexpr
// lines of backend/src/kvcache/policy.h) so they are printed with results.
func PolicyConstants(path string) ([]Setting, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Setting
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := constexprLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v := strings.TrimSpace(m[2])
		if m[4] != "" {
			v += " (" + strings.TrimSpace(m[4]) + ")"
		}
		out = append(out, Setting{Name: "engine " + m[1], Value: v})
	}
	return out, sc.Err()
}

// BaseSettings lists the run's choices that change the numbers.
func BaseSettings(cfg Config, backend, data string, samples, followUps int) []Setting {
	s := []Setting{
		{"backend", backend},
		{"data", fmt.Sprintf("%s (%d samples)", data, samples)},
		{"protocols", strings.Join(cfg.Protocols, ", ")},
	}
	for _, p := range cfg.Protocols {
		s = append(s, Setting{"protocol " + p, ProtocolDescriptions[p]})
	}
	if cfg.has(ProtocolFollowUp) {
		s = append(s, Setting{"P3 follow-up questions", fmt.Sprintf(
			"%d of %d samples; from scenes.jsonl: the first question's template if it can name another object uniquely, else %s in that order; the first such object in scene order (frame, cell) other than the first question's; asked as a plain-text user turn after the model's own stripped first answer",
			followUps, samples, strings.Join(followUpOrder, ", "))})
	}
	budget := cfg.BudgetMode
	if budget == "" {
		budget = "backend default"
	}
	ratios := make([]string, len(cfg.KeepRatios))
	for i, r := range cfg.KeepRatios {
		ratios[i] = formatRatio(r)
	}
	s = append(s,
		Setting{"policies", strings.Join(cfg.Policies, ", ")},
		Setting{"keep ratios", strings.Join(ratios, ", ") + " (fraction of the prompt's KV cache KEPT)"},
		Setting{"budget mode", budget},
		Setting{"decoding", fmt.Sprintf("greedy (temperature 0), at most %d new tokens, stop at eos; prediction = decode(tokens before eos), spaces stripped", cfg.MaxTokens)},
		Setting{"prompt", "the model's chat template (tokenizer_config.json) rendered by the gateway's chat package, one user turn: every image placeholder, then the question; each placeholder expanded to the model's image tokens"},
		Setting{"images", imageSetting(cfg)},
		Setting{"metrics", fmt.Sprintf("exact_match: stripped strings equal; anls: 1 - normalised Levenshtein (lower-cased), 0 at or above %g, best over answers; relaxed_accuracy: numbers within %g relative error (trailing %% = percent), other answers case-insensitively equal", ANLSThreshold, RelaxedTolerance)},
		Setting{"failed requests", "scored 0 and counted in the tables"},
	)
	if cfg.DedupeFull {
		s = append(s, Setting{"policy full", fmt.Sprintf("keeps the whole cache at any ratio: run once per sample and protocol (at keep ratio %s), that result reported at every ratio", formatRatio(cfg.KeepRatios[0]))})
	}
	return s
}

func imageSetting(cfg Config) string {
	if cfg.Processor == nil {
		return "the original files as data: URLs; the gateway decodes and resizes them"
	}
	p := cfg.Processor
	return fmt.Sprintf("decoded, then the gateway's images.Processor (CLIP: shortest edge to %d with Catmull-Rom, resize %v, centre crop %dx%d %v), raw RGB to the engine runner",
		p.ShortestEdge, p.DoResize, p.CropWidth, p.CropHeight, p.DoCrop)
}
