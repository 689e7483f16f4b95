// Package images loads the images of a chat request (data URLs and http(s)
// URLs fetched with SSRF protection), decodes them within byte and pixel caps,
// and resizes them as the model's preprocessor_config.json says.
package images

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders register themselves; gif decodes its first frame
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	_ "golang.org/x/image/webp"
)

// Error is a problem with one image; Param names it (messages[i].content[j]).
type Error struct {
	Param string
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Param, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// FetchOptions bound what a request may make the gateway download.
type FetchOptions struct {
	MaxBytes     int64         // encoded size cap
	MaxPixels    int64         // width*height cap, checked from the header before decoding
	Timeout      time.Duration // whole fetch, redirects included
	MaxRedirects int
	// AllowedHosts, when set, is the only hosts (exact names) that may be fetched.
	AllowedHosts []string
	// AllowPrivate lets loopback/private addresses through: only for tests
	// and closed deployments.
	AllowPrivate bool
}

// Loader turns image URLs into decoded images.
type Loader struct {
	opt    FetchOptions
	client *http.Client
	// public decides whether an address may be dialled; tests narrow it to
	// tell two loopback addresses apart.
	public func(netip.Addr) bool
}

var errBlockedAddress = errors.New("address is not publicly routable")

func NewLoader(opt FetchOptions) *Loader {
	if opt.MaxRedirects == 0 {
		opt.MaxRedirects = 3
	}
	l := &Loader{opt: opt, public: publicAddr}
	dialer := &net.Dialer{Timeout: opt.Timeout, Control: l.checkDialled}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would dial on our behalf and bypass the address check
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   opt.Timeout,
		ResponseHeaderTimeout: opt.Timeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	l.client = &http.Client{
		Transport: transport,
		Timeout:   opt.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > opt.MaxRedirects {
				return fmt.Errorf("more than %d redirects", opt.MaxRedirects)
			}
			return l.checkURL(req.URL)
		},
	}
	return l
}

// checkDialled runs on the address actually being connected, after DNS, so a
// name resolving to an inner address and a redirect to one both fail.
func (l *Loader) checkDialled(network, address string, _ syscall.RawConn) error {
	if l.opt.AllowPrivate {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("unexpected dial address %q", address)
	}
	if !l.public(ip.Unmap()) {
		return fmt.Errorf("refusing to connect to %s: %w", ip, errBlockedAddress)
	}
	return nil
}

func publicAddr(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// Ranges that are not public besides those the netip predicates cover.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),  // NAT64 can reach IPv4 private space
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"), // 6to4 embeds IPv4
}

func (l *Loader) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q is not allowed (http, https, data)", u.Scheme)
	}
	if u.User != nil {
		return errors.New("URLs with credentials are not allowed")
	}
	if len(l.opt.AllowedHosts) > 0 {
		host := strings.ToLower(u.Hostname())
		for _, h := range l.opt.AllowedHosts {
			if host == strings.ToLower(h) {
				return nil
			}
		}
		return fmt.Errorf("host %q is not in the allowed image hosts", u.Hostname())
	}
	return nil
}

// Load fetches or decodes one image URL.
func (l *Loader) Load(ctx context.Context, rawURL string) (image.Image, error) {
	data, err := l.bytes(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	return l.Decode(data)
}

func (l *Loader) bytes(ctx context.Context, rawURL string) ([]byte, error) {
	if strings.HasPrefix(rawURL, "data:") {
		return ParseDataURL(rawURL, l.opt.MaxBytes)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("not a valid URL: %w", err)
	}
	if err := l.checkURL(u); err != nil {
		return nil, err
	}
	if l.opt.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opt.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %w", err)
	}
	req.Header.Set("Accept", "image/*")
	resp, err := l.client.Do(req)
	if err != nil {
		if errors.Is(err, errBlockedAddress) {
			return nil, fmt.Errorf("the image host resolves to an address that is not publicly routable")
		}
		return nil, fmt.Errorf("failed to fetch the image: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the image returned HTTP %d", resp.StatusCode)
	}
	if resp.ContentLength > l.opt.MaxBytes && l.opt.MaxBytes > 0 {
		return nil, fmt.Errorf("the image is %d bytes, over the %d byte limit", resp.ContentLength, l.opt.MaxBytes)
	}
	return readCapped(resp.Body, l.opt.MaxBytes)
}

func readCapped(r io.Reader, limit int64) ([]byte, error) {
	if limit <= 0 {
		return io.ReadAll(r)
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the image: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("the image is over the %d byte limit", limit)
	}
	return data, nil
}

// ParseDataURL decodes a base64 data URL of an image type.
func ParseDataURL(s string, maxBytes int64) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "data:")
	if !ok {
		return nil, errors.New("not a data URL")
	}
	meta, payload, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, errors.New("data URL has no comma")
	}
	params := strings.Split(meta, ";")
	mediaType := strings.ToLower(strings.TrimSpace(params[0]))
	if mediaType != "" && !strings.HasPrefix(mediaType, "image/") {
		return nil, fmt.Errorf("data URL media type %q is not an image", mediaType)
	}
	isBase64 := false
	for _, p := range params[1:] {
		if strings.EqualFold(strings.TrimSpace(p), "base64") {
			isBase64 = true
		}
	}
	if !isBase64 {
		return nil, errors.New("data URL must be base64 encoded")
	}
	if maxBytes > 0 && int64(base64.StdEncoding.DecodedLen(len(payload))) > maxBytes+2 {
		return nil, fmt.Errorf("the image is over the %d byte limit", maxBytes)
	}
	// Some clients wrap base64 at 76 columns.
	payload = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, payload)
	payload = strings.TrimRight(payload, "=")
	data, err := base64.RawStdEncoding.DecodeString(payload)
	if err != nil {
		if data2, err2 := base64.RawURLEncoding.DecodeString(payload); err2 == nil {
			return data2, nil
		}
		return nil, fmt.Errorf("data URL is not valid base64: %w", err)
	}
	if maxBytes > 0 && int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("the image is over the %d byte limit", maxBytes)
	}
	return data, nil
}

// Decode checks the header's dimensions against the pixel cap, then decodes.
func (l *Loader) Decode(data []byte) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not a supported image (png, jpeg, webp, gif): %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("the %s image has no pixels", format)
	}
	if l.opt.MaxPixels > 0 && int64(cfg.Width)*int64(cfg.Height) > l.opt.MaxPixels {
		return nil, fmt.Errorf("the image is %dx%d, over the %d pixel limit", cfg.Width, cfg.Height, l.opt.MaxPixels)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to decode the %s image: %w", format, err)
	}
	return img, nil
}
