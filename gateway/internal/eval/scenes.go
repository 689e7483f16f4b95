package eval

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The fixture's question templates (testdata/tiny-llava-trained, shared
// fixtures README): each names one object of the scene uniquely.
const (
	TemplateColorOfShape     = "color_of_shape"
	TemplateShapeOfColor     = "shape_of_color"
	TemplateFrameOfObject    = "frame_of_object"
	TemplatePositionOfObject = "position_of_object"
)

// followUpOrder is the order in which templates are tried for the P3
// question: the first question's own template first, then these.
var followUpOrder = []string{TemplateColorOfShape, TemplateShapeOfColor, TemplatePositionOfObject, TemplateFrameOfObject}

// SceneObject is one shape in one frame of a fixture sample.
type SceneObject struct {
	Frame int    `json:"frame"`
	Cell  int    `json:"cell"`
	Row   int    `json:"row"`
	Col   int    `json:"col"`
	Shape string `json:"shape"`
	Color string `json:"color"`
	// TokenIndex: the object's position in the expanded prompt (eval.jsonl's target only).
	TokenIndex int `json:"token_index,omitempty"`
}

// Scene is one line of scenes.jsonl.
type Scene struct {
	ID      json.RawMessage `json:"id"`
	Target  SceneObject     `json:"target"`
	Objects []SceneObject   `json:"objects"`
}

// gridHalf: rows/cols below it are top/left (the fixture's 8x8 grid).
const gridHalf = 4

var frameWords = []string{"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
	"eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen"}

// FormQuestion writes the template's question and answer about obj.
func FormQuestion(template string, obj SceneObject) (question, answer string, err error) {
	switch template {
	case TemplateColorOfShape:
		return fmt.Sprintf("What color is the %s?", obj.Shape), obj.Color, nil
	case TemplateShapeOfColor:
		return fmt.Sprintf("What shape is %s?", obj.Color), obj.Shape, nil
	case TemplateFrameOfObject:
		if obj.Frame < 0 || obj.Frame >= len(frameWords) {
			return "", "", fmt.Errorf("frame %d has no word", obj.Frame)
		}
		return fmt.Sprintf("In which frame is the %s %s?", obj.Color, obj.Shape), frameWords[obj.Frame], nil
	case TemplatePositionOfObject:
		vert, horiz := "top", "left"
		if obj.Row >= gridHalf {
			vert = "bottom"
		}
		if obj.Col >= gridHalf {
			horiz = "right"
		}
		return fmt.Sprintf("Where is the %s %s?", obj.Color, obj.Shape), vert + " " + horiz, nil
	}
	return "", "", fmt.Errorf("unknown template %q", template)
}

// uniquelyNamed says whether the template's question about objs[i] names
// exactly one object of the scene (the fixture's rule for every question).
func uniquelyNamed(template string, objs []SceneObject, i int) bool {
	n := 0
	for _, o := range objs {
		switch template {
		case TemplateColorOfShape:
			if o.Shape == objs[i].Shape {
				n++
			}
		case TemplateShapeOfColor:
			if o.Color == objs[i].Color {
				n++
			}
		default:
			if o.Shape == objs[i].Shape && o.Color == objs[i].Color {
				n++
			}
		}
	}
	return n == 1
}

// FollowUpFor picks the P3 question: the first question's template if
// possible, then followUpOrder; within a template, the first object in the
// scene's order (frame, then cell) other than the first question's target
// that the template names uniquely. nil when no object qualifies.
func FollowUpFor(firstTemplate string, sc *Scene) *FollowUp {
	templates := append([]string{firstTemplate}, followUpOrder...)
	for _, tpl := range templates {
		for i, o := range sc.Objects {
			if o.Frame == sc.Target.Frame && o.Cell == sc.Target.Cell {
				continue
			}
			if !uniquelyNamed(tpl, sc.Objects, i) {
				continue
			}
			q, a, err := FormQuestion(tpl, o)
			if err != nil {
				continue
			}
			return &FollowUp{Question: q, Answers: []string{a}, Type: tpl}
		}
	}
	return nil
}

// ReadScenes reads scenes.jsonl by id.
func ReadScenes(path string) (map[string]*Scene, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the scenes: %w", err)
	}
	defer f.Close()
	out := map[string]*Scene{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		s := &Scene{}
		if err := json.Unmarshal(sc.Bytes(), s); err != nil || len(s.ID) == 0 {
			return nil, fmt.Errorf("%s:%d: not a scene line", path, n)
		}
		out[rawID(s.ID)] = s
	}
	return out, sc.Err()
}

func rawID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if _, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64); err == nil {
		return strings.TrimSpace(string(raw))
	}
	return string(raw)
}

// AttachFollowUps gives every sample without a follow-up one formed from its
// scene; it returns how many samples got one.
func AttachFollowUps(samples []*Sample, scenes map[string]*Scene) int {
	n := 0
	for _, s := range samples {
		if s.FollowUp != nil {
			n++
			continue
		}
		sc := scenes[s.ID]
		if sc == nil {
			continue
		}
		if fu := FollowUpFor(s.Type, sc); fu != nil {
			s.FollowUp = fu
			n++
		}
	}
	return n
}
