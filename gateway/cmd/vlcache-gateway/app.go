package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/vlcache/vlcache/gateway/internal/admission"
	"github.com/vlcache/vlcache/gateway/internal/chat"
	"github.com/vlcache/vlcache/gateway/internal/config"
	"github.com/vlcache/vlcache/gateway/internal/images"
	"github.com/vlcache/vlcache/gateway/internal/server"
	"github.com/vlcache/vlcache/gateway/internal/telemetry"
	"github.com/vlcache/vlcache/gateway/internal/tenant"
	"github.com/vlcache/vlcache/gateway/internal/triton"
)

// Main runs the gateway until ctx is cancelled, then lets open streams finish.
func Main(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("vlcache-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config.Config
	cfg.RegisterFlags(fs)
	var tenants tenant.Config
	tenants.RegisterFlags(fs)
	var metricsCfg telemetry.MetricsConfig
	metricsCfg.RegisterFlags(fs)
	if err := cfg.Parse(fs, args, os.Getenv); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := newLogger(cfg, stderr)
	// Tracing from the standard OTEL_* variables; off unless an OTLP endpoint or exporter is set.
	shutdownTracing, tracing, err := telemetry.SetupTracing(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	log.Info("tracing", "enabled", tracing)

	models, err := loadModels(cfg)
	if err != nil {
		return err
	}
	client, err := triton.Dial(cfg.TritonAddr, triton.Options{MaxBackoff: cfg.TritonMaxBackoff, MaxMessageBytes: cfg.TritonMaxMessage})
	if err != nil {
		return err
	}
	defer client.Close()
	if err := checkModels(ctx, cfg, client, models, log); err != nil {
		return err
	}

	var admitter admission.Admitter = &admission.Open{
		Default: admission.KVSetting{KeepRatio: cfg.DefaultKeepRatio, Policy: cfg.DefaultPolicy}, Policies: cfg.Policies}
	var extraReady func(context.Context) error
	if tenants.Enabled() {
		tenants.DefaultPolicy = cfg.DefaultPolicy
		svc, err := tenant.Open(ctx, tenants, cfg.Policies, log)
		if err != nil {
			return fmt.Errorf("failed to open the tenant store: %w", err)
		}
		defer svc.Close()
		admitter, extraReady = svc, svc.Ready
	}

	for _, m := range models {
		metricsCfg.Models = append(metricsCfg.Models, m.Name)
	}
	srv, err := server.New(server.Options{
		Models: models, Generator: client, Admitter: admitter, ExtraReady: extraReady,
		Images: images.NewLoader(images.FetchOptions{MaxBytes: cfg.ImageMaxBytes, MaxPixels: cfg.ImageMaxPixels,
			Timeout: cfg.ImageFetchTimeout, AllowedHosts: cfg.ImageAllowedHosts, AllowPrivate: cfg.ImageAllowPrivate}),
		DefaultMaxTokens: cfg.DefaultMaxTokens, MaxImages: cfg.MaxImages, MaxBodyBytes: cfg.MaxBodyBytes,
		RequestTimeout: cfg.RequestTimeout, ReadyTimeout: cfg.ReadyTimeout, Logger: log,
		Metrics: telemetry.NewMetrics(metricsCfg),
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", cfg.Listen, err)
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: cfg.ReadHeaderTimeout}
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(lis) }()
	log.Info("serving", "addr", lis.Addr().String(), "triton", cfg.TritonAddr, "models", len(models))

	select {
	case err := <-served:
		return fmt.Errorf("HTTP server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down; letting open requests finish", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil {
		_ = httpSrv.Close()
		return fmt.Errorf("failed to shut down cleanly: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func loadModels(cfg config.Config) ([]*server.Model, error) {
	var out []*server.Model
	var errs []error
	for _, spec := range cfg.Models {
		cm, err := chat.Load(spec.Dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("model %q: %w", spec.Name, err))
			continue
		}
		m := &server.Model{Name: spec.Name, TritonModel: spec.TritonModel, Chat: cm, Created: modTime(spec.Dir)}
		if cm.ImageTokenID >= 0 {
			if m.Images, err = images.LoadProcessor(spec.Dir); err != nil {
				errs = append(errs, fmt.Errorf("model %q: %w", spec.Name, err))
				continue
			}
		}
		out = append(out, m)
	}
	return out, errors.Join(errs...)
}

func modTime(dir string) int64 {
	if st, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return st.ModTime().Unix()
	}
	return 0
}

// checkModels reads each model's metadata at start: a served model whose
// inputs do not match the contract is a configuration error. An unreachable
// tritonserver is not: the gateway serves anyway and /readyz says not ready.
func checkModels(ctx context.Context, cfg config.Config, client *triton.Client, models []*server.Model, log *slog.Logger) error {
	if cfg.StartupTimeout <= 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	for _, m := range models {
		for {
			err := client.Ready(cctx, m.TritonModel)
			if err == nil {
				if err := client.CheckContract(cctx, m.TritonModel); err != nil {
					return err
				}
				break
			}
			if cctx.Err() != nil {
				log.Warn("tritonserver or model not ready at start; serving anyway", "model", m.TritonModel, "error", err)
				return nil
			}
			select {
			case <-cctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}
