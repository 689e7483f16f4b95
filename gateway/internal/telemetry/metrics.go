package telemetry

import (
	"flag"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values that stand for many: OtherLabel collects tenants and models
// beyond the cap, NoTenant requests refused before a tenant was known.
const (
	OtherLabel = "other"
	NoTenant   = "none"
)

// MetricsConfig bounds label cardinality and sets the histogram buckets.
type MetricsConfig struct {
	// Models are the served model names; others are reported as "other". When
	// empty, the first MaxModels distinct names get their own label.
	Models    []string
	MaxModels int // default 16
	// MaxTenants caps distinct tenant labels; later tenants become "other".
	MaxTenants int // default 100
	// Buckets in seconds; defaults suit a CPU test model up to a large GPU one.
	TTFTBuckets       []float64
	InterTokenBuckets []float64
	E2EBuckets        []float64
}

// RegisterFlags adds the cardinality caps as flags.
func (c *MetricsConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxTenants, "metrics-max-tenants", 100, "distinct tenant label values in /metrics; later tenants are reported as \"other\"")
	fs.IntVar(&c.MaxModels, "metrics-max-models", 16, "distinct model label values in /metrics when the served models are not listed")
}

// Metrics holds the gateway's Prometheus series. All methods are safe for
// concurrent use; a nil *Metrics ignores every call, so code paths need no
// checks when metrics are off.
type Metrics struct {
	reg      *prometheus.Registry
	ttft     *prometheus.HistogramVec
	itl      *prometheus.HistogramVec
	e2e      *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	requests *prometheus.CounterVec
	kvBytes  *prometheus.CounterVec
	kvRatio  *prometheus.HistogramVec
	inflight *prometheus.GaugeVec

	models  *labelSet
	tenants *labelSet
}

// labelSet admits up to max distinct values (plus a fixed allow-list) and
// folds the rest into OtherLabel, so a flood of names cannot grow the series.
type labelSet struct {
	mu    sync.Mutex
	fixed map[string]bool
	seen  map[string]bool
	max   int
}

func (s *labelSet) fold(v string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fixed[v] || s.seen[v] {
		return v
	}
	if len(s.fixed) > 0 || len(s.seen) >= s.max {
		return OtherLabel
	}
	s.seen[v] = true
	return v
}

// NewMetrics registers the series on a fresh registry (plus Go and process
// collectors); Handler serves it.
func NewMetrics(cfg MetricsConfig) *Metrics {
	if cfg.MaxModels <= 0 {
		cfg.MaxModels = 16
	}
	if cfg.MaxTenants <= 0 {
		cfg.MaxTenants = 100
	}
	if cfg.TTFTBuckets == nil {
		cfg.TTFTBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	}
	if cfg.InterTokenBuckets == nil {
		cfg.InterTokenBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	}
	if cfg.E2EBuckets == nil {
		cfg.E2EBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	}
	fixed := map[string]bool{}
	for _, m := range cfg.Models {
		fixed[m] = true
	}
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	mt := []string{"model", "tenant"}
	m := &Metrics{
		reg: reg,
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vlcache_gateway_time_to_first_token_seconds",
			Help: "Time from calling the backend to the first generated token.", Buckets: cfg.TTFTBuckets}, mt),
		itl: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vlcache_gateway_inter_token_latency_seconds",
			Help: "Time between consecutive generated tokens of a stream.", Buckets: cfg.InterTokenBuckets}, mt),
		e2e: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vlcache_gateway_request_duration_seconds",
			Help: "End-to-end time of a chat completion request, by HTTP status.", Buckets: cfg.E2EBuckets},
			[]string{"model", "tenant", "status"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vlcache_gateway_tokens_total",
			Help: "Tokens processed, by kind: prompt, image (part of prompt), completion."}, []string{"model", "tenant", "kind"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vlcache_gateway_requests_total",
			Help: "Chat completion requests by HTTP status."}, []string{"model", "tenant", "status"}),
		kvBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vlcache_gateway_kv_cache_bytes_total",
			Help: "Prompt KV cache bytes, by kind: full (uncompressed), kept, saved (full - kept)."}, []string{"model", "tenant", "kind"}),
		kvRatio: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vlcache_gateway_kv_cache_keep_ratio",
			Help: "Keep ratio applied to the prompt KV cache.", Buckets: []float64{.05, .1, .2, .3, .5, .75, 1}}, mt),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vlcache_gateway_requests_in_flight",
			Help: "Chat completion requests being served."}, []string{"model"}),
		models:  &labelSet{fixed: fixed, seen: map[string]bool{}, max: cfg.MaxModels},
		tenants: &labelSet{fixed: map[string]bool{}, seen: map[string]bool{NoTenant: true}, max: cfg.MaxTenants + 1},
	}
	for _, c := range []prometheus.Collector{m.ttft, m.itl, m.e2e, m.tokens, m.requests, m.kvBytes, m.kvRatio, m.inflight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry lets the gateway add its own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) labels(model, tenant string) (string, string) {
	if tenant == "" {
		tenant = NoTenant
	}
	return m.models.fold(model), m.tenants.fold(tenant)
}

func (m *Metrics) ObserveTTFT(model, tenant string, d time.Duration) {
	if m == nil {
		return
	}
	mo, te := m.labels(model, tenant)
	m.ttft.WithLabelValues(mo, te).Observe(d.Seconds())
}

func (m *Metrics) ObserveInterToken(model, tenant string, d time.Duration) {
	if m == nil {
		return
	}
	mo, te := m.labels(model, tenant)
	m.itl.WithLabelValues(mo, te).Observe(d.Seconds())
}

// ObserveRequest counts a finished request and its end-to-end duration.
func (m *Metrics) ObserveRequest(model, tenant string, status int, d time.Duration) {
	if m == nil {
		return
	}
	mo, te := m.labels(model, tenant)
	st := strconv.Itoa(status)
	if status < 100 || status > 599 {
		st = OtherLabel
	}
	m.requests.WithLabelValues(mo, te, st).Inc()
	m.e2e.WithLabelValues(mo, te, st).Observe(d.Seconds())
}

// AddTokens counts prompt, image and completion tokens of a request.
func (m *Metrics) AddTokens(model, tenant string, prompt, image, completion int) {
	if m == nil {
		return
	}
	mo, te := m.labels(model, tenant)
	m.tokens.WithLabelValues(mo, te, "prompt").Add(float64(prompt))
	m.tokens.WithLabelValues(mo, te, "image").Add(float64(image))
	m.tokens.WithLabelValues(mo, te, "completion").Add(float64(completion))
}

// AddKV counts the prompt KV cache of a request: full and kept bytes, and the
// saving between them; keepRatio is the applied ratio.
func (m *Metrics) AddKV(model, tenant string, fullBytes, keptBytes int64, keepRatio float64) {
	if m == nil {
		return
	}
	mo, te := m.labels(model, tenant)
	m.kvBytes.WithLabelValues(mo, te, "full").Add(float64(fullBytes))
	m.kvBytes.WithLabelValues(mo, te, "kept").Add(float64(keptBytes))
	m.kvBytes.WithLabelValues(mo, te, "saved").Add(float64(max(fullBytes-keptBytes, 0)))
	if keepRatio > 0 {
		m.kvRatio.WithLabelValues(mo, te).Observe(keepRatio)
	}
}

// InFlight marks a request started; call the returned func when it ends.
func (m *Metrics) InFlight(model string) func() {
	if m == nil {
		return func() {}
	}
	g := m.inflight.WithLabelValues(m.models.fold(model))
	g.Inc()
	return g.Dec
}
