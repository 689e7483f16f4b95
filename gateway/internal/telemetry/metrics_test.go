package telemetry_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/vlcache/vlcache/gateway/internal/telemetry"
)

func scrape(t *testing.T, m *telemetry.Metrics) map[string]*dto {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(raw)))
	require.NoError(t, err)
	out := map[string]*dto{}
	for name, f := range fams {
		d := &dto{series: map[string]float64{}}
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := strings.Join(labels, ",")
			switch {
			case mt.GetCounter() != nil:
				d.series[key] = mt.GetCounter().GetValue()
			case mt.GetHistogram() != nil:
				d.series[key] = float64(mt.GetHistogram().GetSampleCount())
				d.sums = append(d.sums, mt.GetHistogram().GetSampleSum())
			case mt.GetGauge() != nil:
				d.series[key] = mt.GetGauge().GetValue()
			}
		}
		out[name] = d
	}
	return out
}

type dto struct {
	series map[string]float64
	sums   []float64
}

func TestMetricsSeriesAndCardinality(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.MetricsConfig{Models: []string{"llava-tiny"}, MaxTenants: 2})
	m.ObserveTTFT("llava-tiny", "acme", 120*time.Millisecond)
	m.ObserveInterToken("llava-tiny", "acme", 15*time.Millisecond)
	m.ObserveInterToken("llava-tiny", "acme", 25*time.Millisecond)
	m.ObserveRequest("llava-tiny", "acme", 200, time.Second)
	m.ObserveRequest("llava-tiny", "", 401, time.Millisecond)
	m.ObserveRequest("gpt-17", "globex", 403, time.Millisecond)
	m.ObserveRequest("llava-tiny", "initech", 200, time.Second)
	m.ObserveRequest("llava-tiny", "hooli", 429, time.Second) // third tenant: over the cap of 2
	m.AddTokens("llava-tiny", "acme", 100, 64, 9)
	m.AddKV("llava-tiny", "acme", 10000, 1000, 0.1)
	done := m.InFlight("llava-tiny")

	got := scrape(t, m)
	require.Equal(t, 1.0, got["vlcache_gateway_time_to_first_token_seconds"].series["model=llava-tiny,tenant=acme"])
	require.Equal(t, 2.0, got["vlcache_gateway_inter_token_latency_seconds"].series["model=llava-tiny,tenant=acme"])
	req := got["vlcache_gateway_requests_total"].series
	require.Equal(t, 1.0, req["model=llava-tiny,status=200,tenant=acme"])
	require.Equal(t, 1.0, req["model=llava-tiny,status=401,tenant=none"], "no tenant is its own bounded value")
	require.Equal(t, 1.0, req["model=other,status=403,tenant=globex"], "unknown models fold into other")
	require.Equal(t, 1.0, req["model=llava-tiny,status=200,tenant=other"], "tenants beyond the cap fold into other")
	require.Equal(t, 1.0, req["model=llava-tiny,status=429,tenant=other"])
	require.Len(t, req, 5)
	tok := got["vlcache_gateway_tokens_total"].series
	require.Equal(t, 100.0, tok["kind=prompt,model=llava-tiny,tenant=acme"])
	require.Equal(t, 64.0, tok["kind=image,model=llava-tiny,tenant=acme"])
	require.Equal(t, 9.0, tok["kind=completion,model=llava-tiny,tenant=acme"])
	kv := got["vlcache_gateway_kv_cache_bytes_total"].series
	require.Equal(t, 1000.0, kv["kind=kept,model=llava-tiny,tenant=acme"])
	require.Equal(t, 9000.0, kv["kind=saved,model=llava-tiny,tenant=acme"])
	require.Equal(t, 1.0, got["vlcache_gateway_requests_in_flight"].series["model=llava-tiny"])
	require.InDelta(t, 0.04, got["vlcache_gateway_inter_token_latency_seconds"].sums[0], 1e-9)
	done()
	require.Equal(t, 0.0, scrape(t, m)["vlcache_gateway_requests_in_flight"].series["model=llava-tiny"])

	var off *telemetry.Metrics
	off.ObserveTTFT("m", "t", time.Second) // a nil Metrics ignores calls
	off.InFlight("m")()
}
