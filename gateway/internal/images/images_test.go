package images

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readFile(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dataURL(mime string, b []byte) string {
	return "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(b)
}

func TestDataURLFormats(t *testing.T) {
	l := NewLoader(FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1 << 20})
	want, err := png.Decode(bytes.NewReader(readFile(t, "photo.png")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, mime string
		tolerance  float64 // mean difference: lossy formats differ from the PNG
	}{
		{"photo.png", "image/png", 0}, {"photo.webp", "image/webp", 0}, {"photo.jpg", "image/jpeg", 4}, {"photo.gif", "image/gif", 12},
	} {
		t.Run(tc.file, func(t *testing.T) {
			img, err := l.Load(context.Background(), dataURL(tc.mime, readFile(t, tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			if img.Bounds().Dx() != 160 || img.Bounds().Dy() != 120 {
				t.Fatalf("size %v", img.Bounds())
			}
			if d := meanDiff(img, want); d > tc.tolerance {
				t.Fatalf("mean channel difference %.2f > %.2f", d, tc.tolerance)
			}
			// The same image base64-wrapped at 76 columns, as some clients send it.
			enc := base64.StdEncoding.EncodeToString(readFile(t, tc.file))
			var wrapped strings.Builder
			for i := 0; i < len(enc); i += 76 {
				wrapped.WriteString(enc[i:min(i+76, len(enc))] + "\r\n")
			}
			if _, err := l.Load(context.Background(), "data:"+tc.mime+";base64,"+wrapped.String()); err != nil {
				t.Fatalf("wrapped base64: %v", err)
			}
			if d := meanDiff(img, want); d > tc.tolerance {
				t.Fatalf("mean channel difference %.2f > %.2f", d, tc.tolerance)
			}
		})
	}
}

func meanDiff(a, b image.Image) float64 {
	sum, n := 0, 0
	for y := 0; y < a.Bounds().Dy(); y++ {
		for x := 0; x < a.Bounds().Dx(); x++ {
			ca := color.NRGBAModel.Convert(a.At(a.Bounds().Min.X+x, a.Bounds().Min.Y+y)).(color.NRGBA)
			cb := color.NRGBAModel.Convert(b.At(b.Bounds().Min.X+x, b.Bounds().Min.Y+y)).(color.NRGBA)
			for _, d := range []int{int(ca.R) - int(cb.R), int(ca.G) - int(cb.G), int(ca.B) - int(cb.B)} {
				sum += max(d, -d)
				n++
			}
		}
	}
	return float64(sum) / float64(n)
}

func TestDataURLErrors(t *testing.T) {
	l := NewLoader(FetchOptions{MaxBytes: 100, MaxPixels: 1 << 20})
	for _, tc := range []struct{ url, want string }{
		{"data:text/plain;base64,aGVsbG8=", "not an image"},
		{"data:image/png,rawbytes", "base64"},
		{"data:image/png;base64,!!!", "base64"},
		{"data:image/png;base64", "comma"},
		{"data:image/png;base64," + base64.StdEncoding.EncodeToString(make([]byte, 200)), "byte limit"},
		{"data:image/png;base64,aGVsbG8=", "not a supported image"},
		{"ftp://example.com/a.png", "scheme"},
		{"http://user:pw@example.com/a.png", "credentials"},
	} {
		t.Run(tc.url[:min(len(tc.url), 30)], func(t *testing.T) {
			_, err := l.Load(context.Background(), tc.url)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPixelCapFromHeader(t *testing.T) {
	big := image.NewGray(image.Rect(0, 0, 3000, 3000)) // compresses to a few KB
	var buf bytes.Buffer
	if err := png.Encode(&buf, big); err != nil {
		t.Fatal(err)
	}
	l := NewLoader(FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1_000_000})
	_, err := l.Load(context.Background(), dataURL("image/png", buf.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "pixel limit") {
		t.Fatalf("err = %v", err)
	}
}

func listen(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.Listener.Close()
	ts.Listener = lis
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

func pngHandler(t *testing.T) http.Handler {
	data := readFile(t, "photo.png")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(data)
	})
}

// An image server on loopback is refused by default, whether named by
// address or by a name resolving to it, and fetched when private addresses
// are explicitly allowed.
func TestSSRFLoopbackRefusedUnlessAllowed(t *testing.T) {
	ts := listen(t, "127.0.0.1:18130", pngHandler(t))
	port := strings.TrimPrefix(ts.URL, "http://127.0.0.1:")
	strict := NewLoader(FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1 << 20, Timeout: 5 * time.Second})
	for _, u := range []string{ts.URL + "/a.png", "http://localhost:" + port + "/a.png", "http://0.0.0.0:" + port + "/a.png", "http://[::1]:" + port + "/a.png"} {
		_, err := strict.Load(context.Background(), u)
		if err == nil || !(strings.Contains(err.Error(), "not publicly routable") || strings.Contains(err.Error(), "refused")) {
			t.Fatalf("%s: err = %v, want a refusal", u, err)
		}
	}
	open := NewLoader(FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1 << 20, Timeout: 5 * time.Second, AllowPrivate: true})
	img, err := open.Load(context.Background(), ts.URL+"/a.png")
	if err != nil || img.Bounds().Dx() != 160 {
		t.Fatalf("allowed fetch: %v", err)
	}
}

// A redirect from an allowed server to a forbidden address fails: the check
// runs on the address actually dialled. 127.0.0.1 plays the public host and
// 127.0.0.2 the inner one.
func TestSSRFRedirectToInnerAddress(t *testing.T) {
	inner := listen(t, "127.0.0.2:18131", pngHandler(t))
	outer := listen(t, "127.0.0.1:18132", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/secret.png", http.StatusFound)
	}))
	l := NewLoader(FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1 << 20, Timeout: 5 * time.Second})
	l.public = func(ip netip.Addr) bool { return ip == netip.MustParseAddr("127.0.0.1") }
	if _, err := l.Load(context.Background(), inner.URL+"/direct.png"); err == nil {
		t.Fatal("the inner address must be refused")
	}
	_, err := l.Load(context.Background(), outer.URL+"/a.png")
	if err == nil || !strings.Contains(err.Error(), "not publicly routable") {
		t.Fatalf("err = %v, want the redirect refused", err)
	}
}

func TestFetchLimits(t *testing.T) {
	hops := 0
	mux := http.NewServeMux()
	mux.Handle("/img.png", pngHandler(t))
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		hops++
		http.Redirect(w, r, fmt.Sprintf("/loop?%d", hops), http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 5000)) })
	mux.HandleFunc("/missing", http.NotFound)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ts := listen(t, "127.0.0.1:18133", mux)
	l := NewLoader(FetchOptions{MaxBytes: 4000, MaxPixels: 1 << 20, Timeout: 300 * time.Millisecond, AllowPrivate: true})
	for _, tc := range []struct{ path, want string }{
		{"/loop", "redirects"}, {"/big", "byte limit"}, {"/missing", "HTTP 404"}, {"/slow", "fetch"},
	} {
		_, err := l.Load(context.Background(), ts.URL+tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: err = %v, want %q", tc.path, err, tc.want)
		}
	}
	if hops > 4 {
		t.Fatalf("followed %d redirects", hops)
	}
	allow := NewLoader(FetchOptions{MaxBytes: 1 << 20, MaxPixels: 1 << 20, Timeout: 5 * time.Second, AllowPrivate: true, AllowedHosts: []string{"images.example"}})
	if _, err := allow.Load(context.Background(), ts.URL+"/img.png"); err == nil || !strings.Contains(err.Error(), "allowed image hosts") {
		t.Fatalf("allowlist: err = %v", err)
	}
}

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false,
		"192.168.1.1": false, "169.254.169.254": false, "0.0.0.0": false, "224.0.0.1": false, "::1": false,
		"fe80::1": false, "fc00::1": false, "100.64.0.1": false, "::": false, "ff02::1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("publicAddr(%s) = %v", addr, got)
		}
	}
}

// The resize matches PIL's bicubic shortest-edge resize and centre crop
// (testdata/gen.py) within a few levels.
func TestProcessMatchesPIL(t *testing.T) {
	p, err := LoadProcessor(filepath.Join("..", "..", "..", "testdata", "tiny-llava-random"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := png.Decode(bytes.NewReader(readFile(t, "photo.png")))
	if err != nil {
		t.Fatal(err)
	}
	want, err := png.Decode(bytes.NewReader(readFile(t, "photo_clip112.png")))
	if err != nil {
		t.Fatal(err)
	}
	rgb, h, w := p.Process(src)
	if h != 112 || w != 112 || len(rgb) != 112*112*3 {
		t.Fatalf("%dx%d, %d bytes", w, h, len(rgb))
	}
	got := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		copy(got.Pix[4*i:], rgb[3*i:3*i+3])
		got.Pix[4*i+3] = 255
	}
	sum, n := 0, 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			a := got.NRGBAAt(x, y)
			b := color.NRGBAModel.Convert(want.At(x, y)).(color.NRGBA)
			for _, d := range []int{int(a.R) - int(b.R), int(a.G) - int(b.G), int(a.B) - int(b.B)} {
				sum += max(d, -d)
				n++
			}
		}
	}
	mean := float64(sum) / float64(n)
	t.Logf("mean |difference| to PIL bicubic: %.3f levels", mean)
	if mean > 2 {
		t.Fatalf("mean |difference| to PIL %.2f levels", mean)
	}
	// An image already at the model's size passes through unchanged.
	same, _, _ := p.Process(want)
	for i := 0; i < 112*112; i++ {
		c := color.NRGBAModel.Convert(want.At(i%112, i/112)).(color.NRGBA)
		if same[3*i] != c.R || same[3*i+1] != c.G || same[3*i+2] != c.B {
			t.Fatalf("pixel %d changed by a same-size pass", i)
		}
	}
}

func FuzzParseDataURL(f *testing.F) {
	f.Add("data:image/png;base64,iVBORw0KGgo=")
	f.Add("data:;base64,")
	f.Add("data:image/gif;charset=x;base64,R0lGOD==")
	f.Fuzz(func(t *testing.T, s string) {
		data, err := ParseDataURL(s, 1<<16)
		if err == nil && len(data) > 1<<16 {
			t.Fatalf("%d bytes passed the cap", len(data))
		}
		l := NewLoader(FetchOptions{MaxBytes: 1 << 16, MaxPixels: 1 << 16})
		if err == nil {
			_, _ = l.Decode(data) // must not panic
		}
	})
}
