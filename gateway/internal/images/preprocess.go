package images

import (
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"os"
	"path/filepath"

	xdraw "golang.org/x/image/draw"
)

// Processor resizes images as a CLIPImageProcessor would before
// normalisation (which the backend does): shortest edge to Size with bicubic
// resampling, then a centre crop, as RGB uint8.
type Processor struct {
	ShortestEdge          int
	CropHeight, CropWidth int
	DoResize, DoCrop      bool
}

type preprocessorConfig struct {
	ImageProcessorType string `json:"image_processor_type"`
	DoResize           *bool  `json:"do_resize"`
	DoCenterCrop       *bool  `json:"do_center_crop"`
	Size               struct {
		ShortestEdge int `json:"shortest_edge"`
		Height       int `json:"height"`
		Width        int `json:"width"`
	} `json:"size"`
	CropSize struct {
		Height int `json:"height"`
		Width  int `json:"width"`
	} `json:"crop_size"`
}

// LoadProcessor reads preprocessor_config.json.
func LoadProcessor(modelDir string) (*Processor, error) {
	path := filepath.Join(modelDir, "preprocessor_config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	var c preprocessorConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	p := &Processor{DoResize: c.DoResize == nil || *c.DoResize, DoCrop: c.DoCenterCrop == nil || *c.DoCenterCrop,
		ShortestEdge: c.Size.ShortestEdge, CropHeight: c.CropSize.Height, CropWidth: c.CropSize.Width}
	if p.ShortestEdge == 0 && c.Size.Height > 0 && c.Size.Height == c.Size.Width {
		p.ShortestEdge = c.Size.Height
	}
	if !p.DoCrop {
		// Without a crop the output is the resized square (fixed-size models).
		p.CropHeight, p.CropWidth = p.ShortestEdge, p.ShortestEdge
	}
	if p.CropHeight <= 0 || p.CropWidth <= 0 || (p.DoResize && p.ShortestEdge <= 0) {
		return nil, fmt.Errorf("%s: need size.shortest_edge and crop_size", path)
	}
	return p, nil
}

// Process returns H*W*3 RGB bytes of the model's input size.
func (p *Processor) Process(src image.Image) (rgb []byte, height, width int) {
	// Drop alpha without premultiplying, as PIL's convert("RGB") does.
	b := src.Bounds()
	flat := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(flat, flat.Bounds(), src, b.Min, draw.Src)
	for i := 3; i < len(flat.Pix); i += 4 {
		flat.Pix[i] = 255
	}
	img := flat
	if p.DoResize {
		w, h := b.Dx(), b.Dy()
		var nw, nh int
		if w <= h {
			nw, nh = p.ShortestEdge, int(float64(p.ShortestEdge)*float64(h)/float64(w))
		} else {
			nh, nw = p.ShortestEdge, int(float64(p.ShortestEdge)*float64(w)/float64(h))
		}
		if nw != w || nh != h {
			dst := image.NewNRGBA(image.Rect(0, 0, nw, nh))
			xdraw.CatmullRom.Scale(dst, dst.Bounds(), img, img.Bounds(), xdraw.Src, nil)
			img = dst
		}
	}
	// Centre crop (padding with black if the image is smaller), as HF does.
	ch, cw := p.CropHeight, p.CropWidth
	ib := img.Bounds()
	top, left := (ib.Dy()-ch)/2, (ib.Dx()-cw)/2
	if ib.Dy() < ch {
		top = -((ch - ib.Dy() + 1) / 2)
	}
	if ib.Dx() < cw {
		left = -((cw - ib.Dx() + 1) / 2)
	}
	rgb = make([]byte, ch*cw*3)
	for y := 0; y < ch; y++ {
		sy := y + top
		if sy < 0 || sy >= ib.Dy() {
			continue
		}
		for x := 0; x < cw; x++ {
			sx := x + left
			if sx < 0 || sx >= ib.Dx() {
				continue
			}
			o := img.PixOffset(sx, sy)
			copy(rgb[(y*cw+x)*3:], img.Pix[o:o+3])
		}
	}
	return rgb, ch, cw
}
