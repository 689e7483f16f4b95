// Package deploy_test checks the deployment files that CI cannot run (no
// Docker engine, no cluster): they parse, the files they reference exist, the
// services they name exist, and selectors, autoscaler and pipelines line up.
package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/stretchr/testify/require"
)

type doc = map[string]any

func load(t *testing.T, path string) []doc {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []doc
	for {
		var d doc
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "%s is not valid YAML", path)
		if d != nil {
			out = append(out, d)
		}
	}
	require.NotEmpty(t, out, path)
	return out
}

// get walks a path of map keys and list indices.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func TestComposeFile(t *testing.T) {
	c := load(t, "../docker-compose.yml")[0]
	services := c["services"].(map[string]any)
	for _, s := range []string{"gateway", "tritonserver", "redis", "otel-collector"} {
		require.Contains(t, services, s)
	}
	for name, s := range services {
		if df, ok := get(s, "build", "dockerfile").(string); ok {
			ctx := get(s, "build", "context").(string)
			require.FileExists(t, filepath.Join("..", ctx, df), "dockerfile of %s", name)
		}
		if vols, ok := get(s, "volumes").([]any); ok {
			for _, v := range vols {
				src := strings.Split(fmt.Sprint(v), ":")[0]
				if strings.HasPrefix(src, "./") {
					_, err := os.Stat(filepath.Join("..", src))
					require.NoError(t, err, "volume source of %s", name)
				} else {
					require.Contains(t, c["volumes"], src, "named volume of %s is declared", name)
				}
			}
		}
		if deps, ok := get(s, "depends_on").(map[string]any); ok {
			for d := range deps {
				require.Contains(t, services, d)
			}
		} else if deps, ok := get(s, "depends_on").([]any); ok {
			for _, d := range deps {
				require.Contains(t, services, d)
			}
		}
	}
	env := get(services, "gateway", "environment").(map[string]any)
	u, err := url.Parse(env["VLCACHE_REDIS_URL"].(string))
	require.NoError(t, err)
	require.Contains(t, services, u.Hostname(), "the gateway's Redis is a compose service")
	u, err = url.Parse(env["OTEL_EXPORTER_OTLP_ENDPOINT"].(string))
	require.NoError(t, err)
	require.Equal(t, "otel-collector", u.Hostname())
	require.Equal(t, "4318", u.Port(), "OTLP/HTTP, the gateway's default protocol")

	triton := strs(get(services, "tritonserver", "command"))
	require.Contains(t, triton, "--trace-config=mode=opentelemetry")
	require.Contains(t, triton, "--trace-config=opentelemetry,url=otel-collector:4318/v1/traces")
	require.NotNil(t, get(services, "tritonserver", "deploy", "resources", "reservations", "devices", 0), "Triton gets a GPU")
}

func TestCollectorConfig(t *testing.T) {
	c := load(t, "otel/collector.yaml")[0]
	require.Equal(t, "0.0.0.0:4318", get(c, "receivers", "otlp", "protocols", "http", "endpoint"))
	require.Equal(t, "0.0.0.0:4317", get(c, "receivers", "otlp", "protocols", "grpc", "endpoint"))
	for name, p := range get(c, "service", "pipelines").(map[string]any) {
		for _, kind := range []string{"receivers", "processors", "exporters"} {
			for _, comp := range strs(get(p, kind)) {
				require.Contains(t, c[kind], comp, "pipeline %s uses an undefined %s", name, kind)
			}
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	kust := load(t, "k8s/kustomization.yaml")[0]
	var objs []doc
	for _, r := range strs(kust["resources"]) {
		objs = append(objs, load(t, filepath.Join("k8s", r))...)
	}
	for _, g := range kust["configMapGenerator"].([]any) {
		for _, f := range strs(get(g, "files")) {
			require.FileExists(t, filepath.Join("k8s", strings.SplitN(f, "=", 2)[1]))
		}
	}
	byKind := map[string]map[string]doc{}
	for _, o := range objs {
		require.NotEmpty(t, o["apiVersion"])
		kind, name := o["kind"].(string), get(o, "metadata", "name").(string)
		if byKind[kind] == nil {
			byKind[kind] = map[string]doc{}
		}
		byKind[kind][name] = o
	}
	workloads := map[string]doc{}
	for _, k := range []string{"Deployment", "StatefulSet"} {
		for n, o := range byKind[k] {
			workloads[n] = o
			labels := get(o, "spec", "template", "metadata", "labels").(map[string]any)
			for k, v := range get(o, "spec", "selector", "matchLabels").(map[string]any) {
				require.Equal(t, v, labels[k], "%s selects its own pods", n)
			}
			vols, _ := get(o, "spec", "template", "spec", "volumes").([]any)
			for _, v := range vols {
				if claim, ok := get(v, "persistentVolumeClaim", "claimName").(string); ok {
					require.Contains(t, byKind["PersistentVolumeClaim"], claim, "%s mounts a declared claim", n)
				}
			}
		}
	}
	for _, w := range []string{"gateway", "triton", "redis", "otel-collector"} {
		require.Contains(t, workloads, w)
	}
	for n, svc := range byKind["Service"] {
		sel := get(svc, "spec", "selector").(map[string]any)
		matched := false
		for _, w := range workloads {
			labels := get(w, "spec", "template", "metadata", "labels").(map[string]any)
			ok := true
			for k, v := range sel {
				ok = ok && labels[k] == v
			}
			matched = matched || ok
		}
		require.True(t, matched, "Service %s selects some pods", n)
	}
	hpa := byKind["HorizontalPodAutoscaler"]["gateway"]
	require.NotNil(t, hpa)
	require.Equal(t, "Deployment", get(hpa, "spec", "scaleTargetRef", "kind"))
	require.Contains(t, byKind["Deployment"], get(hpa, "spec", "scaleTargetRef", "name"))

	triton := byKind["Deployment"]["triton"]
	require.NotNil(t, get(triton, "spec", "template", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"), "Triton asks for a GPU")
	require.NotNil(t, get(triton, "spec", "template", "spec", "nodeSelector"))
	require.Equal(t, "None", get(byKind["Service"]["triton"], "spec", "clusterIP"), "headless, for client-side balancing")

	gw := get(byKind["Deployment"]["gateway"], "spec", "template", "spec", "containers", 0)
	envNames := []string{}
	for _, e := range get(gw, "env").([]any) {
		envNames = append(envNames, get(e, "name").(string))
	}
	require.True(t, slices.Contains(envNames, "VLCACHE_REDIS_URL"), "replicas share limits through Redis")
	require.True(t, slices.Contains(envNames, "OTEL_EXPORTER_OTLP_ENDPOINT"))
}

// The gateway flags and VLCACHE_* variables that compose and Kubernetes pass
// must be flags the real binary knows.
func TestGatewayFlagsExist(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vlcache-gateway")
	build := exec.Command("go", "build", "-o", bin, "./gateway/cmd/vlcache-gateway")
	build.Dir = ".."
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	help, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits non-zero after printing the flags
	known := map[string]bool{}
	for _, line := range strings.Split(string(help), "\n") {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "-"); ok {
			known[strings.Fields(f)[0]] = true
		}
	}
	require.True(t, known["listen"] && known["redis-url"] && known["metrics-max-tenants"], "parsed the flag list: %v", known)

	var args []string
	var envs []string
	compose := load(t, "../docker-compose.yml")[0]
	args = append(args, strs(get(compose, "services", "gateway", "command"))...)
	for k := range get(compose, "services", "gateway", "environment").(map[string]any) {
		envs = append(envs, k)
	}
	for _, o := range load(t, "k8s/gateway.yaml") {
		if o["kind"] == "Deployment" {
			c := get(o, "spec", "template", "spec", "containers", 0)
			args = append(args, strs(get(c, "args"))...)
			for _, e := range get(c, "env").([]any) {
				envs = append(envs, get(e, "name").(string))
			}
		}
	}
	for _, a := range args {
		name := strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0]
		require.True(t, known[name], "flag %s is not a vlcache-gateway flag", a)
	}
	for _, e := range envs {
		if name, ok := strings.CutPrefix(e, "VLCACHE_"); ok {
			flagName := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			require.True(t, known[flagName], "%s sets no flag (%s)", e, flagName)
		}
	}
}
