package eval

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/vlcache/vlcache/gateway/internal/images"
)

// MaxImageBytes bounds one downloaded or read image.
const MaxImageBytes = 32 << 20

// ReadImageBytes returns the encoded bytes of a file path, http(s) URL or
// data: URL.
func ReadImageBytes(ctx context.Context, ref string) ([]byte, error) {
	switch {
	case strings.HasPrefix(ref, "data:"):
		comma := strings.IndexByte(ref, ',')
		if comma < 0 || !strings.Contains(ref[:comma], ";base64") {
			return nil, errors.New("a data: URL image must be base64")
		}
		return base64.StdEncoding.DecodeString(ref[comma+1:])
	case strings.HasPrefix(ref, "http://"), strings.HasPrefix(ref, "https://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("failed to fetch %s: %w", ref, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("failed to fetch %s: %s", ref, resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, MaxImageBytes+1))
		if err != nil {
			return nil, err
		}
		if len(b) > MaxImageBytes {
			return nil, fmt.Errorf("%s is larger than %d bytes", ref, MaxImageBytes)
		}
		return b, nil
	}
	b, err := os.ReadFile(ref)
	if err != nil {
		return nil, fmt.Errorf("failed to read image: %w", err)
	}
	return b, nil
}

// DecodeImage decodes PNG, JPEG, GIF or WebP (the gateway's images package
// registers the decoders and bounds the pixel count).
func DecodeImage(encoded []byte) (image.Image, error) {
	return decoder.Decode(encoded)
}

var decoder = images.NewLoader(images.FetchOptions{})
