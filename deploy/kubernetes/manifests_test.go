// Package kubernetes_test checks the manifests in deploy/kubernetes without
// a cluster: every document is decoded strictly into its Kubernetes API type
// (unknown or duplicate fields fail, as they would on the API server), and
// the properties the deployment relies on are checked against each other,
// against keyrelay's own configuration parser and against the handlers
// `keyrelay serve` really registers.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/settings"
)

// kinds maps every kind the directory may hold to its apiVersion and a
// constructor of its typed object. Any other kind fails the test.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"Deployment":          {"apps/v1", func() any { return &appsv1.Deployment{} }},
	"Service":             {"v1", func() any { return &corev1.Service{} }},
	"ConfigMap":           {"v1", func() any { return &corev1.ConfigMap{} }},
	"ServiceAccount":      {"v1", func() any { return &corev1.ServiceAccount{} }},
	"PodDisruptionBudget": {"policy/v1", func() any { return &policyv1.PodDisruptionBudget{} }},
	"NetworkPolicy":       {"networking.k8s.io/v1", func() any { return &networkingv1.NetworkPolicy{} }},
	"Kustomization":       {"kustomize.config.k8s.io/v1beta1", func() any { return &kustomization{} }},
}

// kustomization is the part of kustomize's Kustomization this directory
// uses; any other field fails the strict decoding (add it here when you
// start using it).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

// object is one decoded document.
type object struct {
	file string
	kind string
	obj  any
}

// bundle is everything in the directory, decoded.
type bundle struct {
	objects       []object
	files         []string // every manifest file, kustomization.yaml included
	deployment    *appsv1.Deployment
	services      []*corev1.Service
	configMaps    []*corev1.ConfigMap
	accounts      []*corev1.ServiceAccount
	pdbs          []*policyv1.PodDisruptionBudget
	policies      []*networkingv1.NetworkPolicy
	kustomization *kustomization
}

// load decodes every *.yaml/*.yml file in the directory, one typed object
// per non-empty document.
func load(t *testing.T) *bundle {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no manifests found")
	}
	b := &bundle{files: files}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			o, ok, err := decode(doc)
			if err != nil {
				t.Errorf("%s: document %d: %v", f, i, err)
				continue
			}
			if !ok {
				continue // only comments
			}
			o.file = f
			b.add(t, o)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// The checks below read the Deployment's one container.
	if b.deployment == nil {
		t.Fatal("no Deployment")
	}
	if spec := b.deployment.Spec.Template.Spec; len(spec.Containers) != 1 || len(spec.InitContainers) > 0 {
		t.Fatalf("Deployment %s: %d containers and %d init containers; the checks cover exactly one container (keyrelay)",
			b.deployment.Name, len(spec.Containers), len(spec.InitContainers))
	}
	return b
}

// decode turns one YAML document into its typed object, strictly: YAML
// duplicate keys, JSON duplicate or unknown fields (case-sensitively, as the
// API server matches them) and unknown kinds are errors. ok is false for a
// document that holds nothing but comments.
func decode(doc []byte) (o object, ok bool, err error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, false, err
	}
	if string(bytes.TrimSpace(j)) == "null" {
		return object{}, false, nil
	}
	var tm metav1.TypeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return object{}, false, fmt.Errorf("apiVersion/kind: %w", err)
	}
	k, known := kinds[tm.Kind]
	if !known {
		return object{}, false, fmt.Errorf("unknown kind %q (apiVersion %q): add it to kinds with its API type", tm.Kind, tm.APIVersion)
	}
	if tm.APIVersion != k.apiVersion {
		return object{}, false, fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, k.apiVersion)
	}
	obj := k.new()
	strict, err := sigsjson.UnmarshalStrict(j, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return object{}, false, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return object{}, false, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return object{kind: tm.Kind, obj: obj}, true, nil
}

func (b *bundle) add(t *testing.T, o object) {
	t.Helper()
	b.objects = append(b.objects, o)
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		if b.deployment != nil {
			t.Errorf("%s: a second Deployment (%s); the checks assume one", o.file, v.Name)
		}
		b.deployment = v
	case *corev1.Service:
		b.services = append(b.services, v)
	case *corev1.ConfigMap:
		b.configMaps = append(b.configMaps, v)
	case *corev1.ServiceAccount:
		b.accounts = append(b.accounts, v)
	case *policyv1.PodDisruptionBudget:
		b.pdbs = append(b.pdbs, v)
	case *networkingv1.NetworkPolicy:
		b.policies = append(b.policies, v)
	case *kustomization:
		if o.file != "kustomization.yaml" {
			t.Errorf("%s: a Kustomization outside kustomization.yaml", o.file)
		}
		b.kustomization = v
	}
}

// meta returns the ObjectMeta of a Kubernetes object (nil for the
// Kustomization).
func meta(obj any) *metav1.ObjectMeta {
	switch v := obj.(type) {
	case *appsv1.Deployment:
		return &v.ObjectMeta
	case *corev1.Service:
		return &v.ObjectMeta
	case *corev1.ConfigMap:
		return &v.ObjectMeta
	case *corev1.ServiceAccount:
		return &v.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return &v.ObjectMeta
	case *networkingv1.NetworkPolicy:
		return &v.ObjectMeta
	}
	return nil
}

// The manifests form one complete deployment: each kind the issue asks for
// is there (and nothing else, a PersistentVolumeClaim included: load fails
// on kinds outside kinds), names valid and unique, no namespace hard-coded,
// and kustomization.yaml lists every file.
func TestManifestsComplete(t *testing.T) {
	b := load(t)
	for kind, n := range map[string]int{"Service": len(b.services), "ConfigMap": len(b.configMaps),
		"ServiceAccount": len(b.accounts), "PodDisruptionBudget": len(b.pdbs), "NetworkPolicy": len(b.policies)} {
		if n == 0 {
			t.Errorf("no %s", kind)
		}
	}
	seen := map[string]string{}
	for _, o := range b.objects {
		m := meta(o.obj)
		if m == nil {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(m.Name); len(errs) > 0 {
			t.Errorf("%s: %s name %q: %v", o.file, o.kind, m.Name, errs)
		}
		if m.Namespace != "" {
			t.Errorf("%s: %s %s sets namespace %q; leave it to kubectl -n or an overlay", o.file, o.kind, m.Name, m.Namespace)
		}
		if m.Labels["app.kubernetes.io/name"] != "keyrelay" {
			t.Errorf("%s: %s %s: label app.kubernetes.io/name is %q, want keyrelay", o.file, o.kind, m.Name, m.Labels["app.kubernetes.io/name"])
		}
		id := o.kind + "/" + m.Name
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: %s defined again (first in %s)", o.file, id, prev)
		}
		seen[id] = o.file
	}

	k := b.kustomization
	if k == nil {
		t.Fatal("no kustomization.yaml")
	}
	var want []string
	for _, f := range b.files {
		if f != "kustomization.yaml" {
			want = append(want, f)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want every manifest in the directory: %v", got, want)
	}
	image := b.deployment.Spec.Template.Spec.Containers[0].Image
	name, _, _ := strings.Cut(image, ":")
	if strings.Contains(image, "/") || strings.Contains(image, "@") {
		t.Errorf("image %q: want a bare name and tag; registries are set in kustomization.yaml by whoever deploys", image)
	}
	found := false
	for _, im := range k.Images {
		if im.Name == name {
			found = true
		}
		if strings.Contains(im.NewName, ".") {
			t.Errorf("kustomization.yaml images: newName %q names a registry host; leave it to whoever deploys", im.NewName)
		}
	}
	if !found {
		t.Errorf("kustomization.yaml images: no entry for %q", name)
	}
}

// The Deployment runs several hardened, non-root pods with read-only root
// file systems, probes on the ops port, sized resources and a grace period
// longer than keyrelay's shutdown.
func TestDeploymentPod(t *testing.T) {
	b := load(t)
	d := b.deployment
	cfg, _ := parseConfig(t, b)
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas: want at least 2 (unset means 1)")
	}
	c := spec.Containers[0]

	// The service account, and no API token in the pod.
	if len(b.accounts) != 1 || spec.ServiceAccountName != b.accounts[0].Name {
		t.Errorf("serviceAccountName %q, want the ServiceAccount defined here", spec.ServiceAccountName)
	}
	for _, sa := range b.accounts {
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", sa.Name)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("pod: automountServiceAccountToken must be false")
	}

	// Security context.
	psc, csc := spec.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil {
		t.Fatal("pod and container securityContext are required")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod: runAsNonRoot must be true")
	}
	uid, gid := firstInt64(csc.RunAsUser, psc.RunAsUser), firstInt64(csc.RunAsGroup, psc.RunAsGroup)
	if uid == nil || *uid == 0 || gid == nil || *gid == 0 {
		t.Errorf("runAsUser %v, runAsGroup %v: want a fixed non-root uid and gid", uid, gid)
	} else if du, dg := dockerfileUser(t); du != *uid || dg != *gid {
		t.Errorf("runAsUser/runAsGroup %d:%d, but deploy/Dockerfile runs as USER %d:%d", *uid, *gid, du, dg)
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("container: readOnlyRootFilesystem must be true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("container: allowPrivilegeEscalation must be false")
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Error("container: privileged")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("container: capabilities must drop ALL and add none, got %+v", csc.Capabilities)
	}
	seccomp := csc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", seccomp)
	}

	// Ports: the two listeners of the configuration, named.
	ports := containerPorts(t, c)
	if n := ports["ops"]; n != addrPort(t, "keyrelay.http.addr", cfg.Keyrelay.HTTP.Addr) {
		t.Errorf("container port ops is %d, keyrelay.http.addr is %s", n, cfg.Keyrelay.HTTP.Addr)
	}
	if n := ports["lookup"]; n != addrPort(t, "keyrelay.lookup.addr", cfg.Keyrelay.Lookup.Addr) {
		t.Errorf("container port lookup is %d, keyrelay.lookup.addr is %s", n, cfg.Keyrelay.Lookup.Addr)
	}

	// Probes: startup and liveness on /healthz, readiness on /readyz, all on
	// the ops port. TestProbePathsServed checks what serve answers there.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startupProbe", c.StartupProbe, "/healthz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s: path %q, want %s", p.name, g.Path, p.path)
		}
		if n := resolvePort(t, ports, g.Port); n != ports["ops"] {
			t.Errorf("%s: port %s (%d) is not the ops port %d", p.name, g.Port.String(), n, ports["ops"])
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s: scheme %s; the ops listener is plain HTTP", p.name, g.Scheme)
		}
	}

	// Shutdown: the grace period covers the preStop sleep, the worker's
	// shutdown_grace and the listeners' 5 s shutdown, with room to spare.
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if c.Lifecycle.PreStop.Exec != nil {
			t.Error("preStop exec: the distroless image has no shell or sleep binary")
		}
		if s := c.Lifecycle.PreStop.Sleep; s != nil {
			preStop = time.Duration(s.Seconds) * time.Second
		}
	}
	need := preStop + cfg.Keyrelay.Worker.ShutdownGrace + 5*time.Second
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= need+5*time.Second {
		var got time.Duration = 30 * time.Second // Kubernetes' default
		if g != nil {
			got = time.Duration(*g) * time.Second
		}
		t.Errorf("terminationGracePeriodSeconds is %s: want more than preStop %s + worker.shutdown_grace %s + 5s listener shutdown + 5s",
			got, preStop, cfg.Keyrelay.Worker.ShutdownGrace)
	}

	// Resources: requests and limits for CPU and memory, requests within
	// limits, and the Go soft memory limit below the container's.
	r := c.Resources
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := r.Requests[res]
		lim, okLim := r.Limits[res]
		if !okReq || !okLim {
			t.Errorf("resources: %s needs a request and a limit", res)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("resources: %s request %s above its limit %s", res, req.String(), lim.String())
		}
	}
	if lim, ok := r.Limits[corev1.ResourceMemory]; ok {
		v := envLiteral(c, "GOMEMLIMIT")
		if v == "" {
			t.Error("GOMEMLIMIT is not set: with GOGC=400 the heap may grow to 5x what is live before a collection")
		} else if n, err := goMemLimit(v); err != nil {
			t.Errorf("GOMEMLIMIT %q: %v", v, err)
		} else if n >= lim.Value() || n < lim.Value()/2 {
			t.Errorf("GOMEMLIMIT %q (%d bytes) should sit between half the memory limit and the limit (%s)", v, n, lim.String())
		}
	}

	// Volumes: nothing persistent; only emptyDir is writable.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
		switch {
		case v.ConfigMap != nil, v.Secret != nil, v.EmptyDir != nil:
		default:
			t.Errorf("volume %s: only configMap, secret and emptyDir volumes are expected (nothing needs persistence with an external NATS)", v.Name)
		}
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("volumeMount %s: no such volume", m.Name)
			continue
		}
		if !m.ReadOnly && v.EmptyDir == nil {
			t.Errorf("volumeMount %s at %s is writable; only emptyDir scratch space may be", m.Name, m.MountPath)
		}
		if v.EmptyDir != nil && v.EmptyDir.SizeLimit == nil {
			t.Errorf("emptyDir %s: set a sizeLimit", m.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Error("envFrom: list each variable with its secretKeyRef, so every key is named and documented")
	}
}

// firstInt64 is the container's setting when present, else the pod's.
func firstInt64(container, pod *int64) *int64 {
	if container != nil {
		return container
	}
	return pod
}

// dockerfileUser is the USER uid:gid of deploy/Dockerfile.
func dockerfileUser(t *testing.T) (uid, gid int64) {
	t.Helper()
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^USER\s+(\d+):(\d+)\s*$`).FindAllSubmatch(data, -1)
	if len(m) == 0 {
		t.Fatal("deploy/Dockerfile: no numeric USER uid:gid")
	}
	last := m[len(m)-1]
	uid, _ = strconv.ParseInt(string(last[1]), 10, 64)
	gid, _ = strconv.ParseInt(string(last[2]), 10, 64)
	return uid, gid
}

// goMemLimit parses GOMEMLIMIT's syntax: bytes with an optional B, KiB,
// MiB, GiB or TiB suffix.
func goMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func envLiteral(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value
		}
	}
	return ""
}

// containerPorts maps the container's port names to numbers; every port
// must be named (Services, probes and the network policy refer to names).
func containerPorts(t *testing.T, c corev1.Container) map[string]int32 {
	t.Helper()
	out := map[string]int32{}
	for _, p := range c.Ports {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			t.Errorf("container port %d: name %q: %v", p.ContainerPort, p.Name, errs)
		}
		if _, dup := out[p.Name]; dup {
			t.Errorf("container port name %q used twice", p.Name)
		}
		out[p.Name] = p.ContainerPort
	}
	return out
}

// resolvePort turns a named or numbered port into the container's number
// (0 when the name is unknown, which fails the callers' comparisons).
func resolvePort(t *testing.T, ports map[string]int32, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	n, ok := ports[p.StrVal]
	if !ok {
		t.Errorf("port %q is not a container port (have %v)", p.StrVal, ports)
	}
	return n
}

// addrPort is the port of a host:port listener address, which must not be
// loopback-only: the kubelet, Prometheus and the gateway reach the pod IP.
func addrPort(t *testing.T, setting, addr string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s %q: %v", setting, addr, err)
		return -1
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("%s %q listens on loopback only: probes and Services cannot reach it", setting, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Errorf("%s %q: %v", setting, addr, err)
	}
	return int32(n)
}

// The selectors of the Deployment, Services, PDB, network policy and
// spread constraints all pick the Deployment's pods, and the Services'
// target ports are the container's.
func TestSelectors(t *testing.T) {
	b := load(t)
	d := b.deployment
	pod := labels.Set(d.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(pod) {
		t.Fatalf("Deployment selector %v does not select its own pod template labels %v (%v)", d.Spec.Selector, pod, err)
	}
	ports := containerPorts(t, d.Spec.Template.Spec.Containers[0])

	exposed := map[string]string{}
	for _, s := range b.services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(pod) {
			t.Errorf("Service %s: selector %v does not select the pods (%v)", s.Name, s.Spec.Selector, pod)
		}
		if !labels.Equals(s.Spec.Selector, d.Spec.Selector.MatchLabels) {
			t.Errorf("Service %s: selector %v, want the Deployment's %v", s.Name, s.Spec.Selector, d.Spec.Selector.MatchLabels)
		}
		if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Service %s: type %s; keyrelay's ports are for the cluster only", s.Name, s.Spec.Type)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				t.Errorf("Service %s port %s: targetPort %s; name the container port", s.Name, p.Name, p.TargetPort.String())
				continue
			}
			if resolvePort(t, ports, p.TargetPort) == 0 {
				continue
			}
			if p.Port != ports[p.TargetPort.StrVal] {
				t.Errorf("Service %s port %s: %d in front of container port %d; keep the numbers alike", s.Name, p.Name, p.Port, ports[p.TargetPort.StrVal])
			}
			exposed[p.TargetPort.StrVal] = s.Name
		}
	}
	for _, name := range []string{"ops", "lookup"} {
		if exposed[name] == "" {
			t.Errorf("no Service exposes container port %s", name)
		}
	}
	if exposed["ops"] == exposed["lookup"] && exposed["ops"] != "" {
		t.Errorf("Service %s exposes both the ops and the lookup port; keep them apart", exposed["ops"])
	}

	for _, p := range b.pdbs {
		ps, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || ps.Empty() || !ps.Matches(pod) {
			t.Errorf("PodDisruptionBudget %s: selector %v does not select the pods (%v)", p.Name, p.Spec.Selector, err)
		}
		if p.Spec.Selector == nil || !labels.Equals(p.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
			t.Errorf("PodDisruptionBudget %s: selector %v, want the Deployment's %v", p.Name, p.Spec.Selector, d.Spec.Selector.MatchLabels)
		}
		one := intstr.FromInt32(1)
		switch {
		case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable == nil && *p.Spec.MaxUnavailable == one:
		case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable == nil && *p.Spec.MinAvailable == one:
		default:
			t.Errorf("PodDisruptionBudget %s: want maxUnavailable: 1 or minAvailable: 1, got max %v min %v", p.Name, p.Spec.MaxUnavailable, p.Spec.MinAvailable)
		}
	}
	for _, np := range b.policies {
		ns, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || ns.Empty() || !ns.Matches(pod) {
			t.Errorf("NetworkPolicy %s: podSelector %v does not select the pods (%v)", np.Name, np.Spec.PodSelector, err)
		}
	}
	for _, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
		ts, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
		if err != nil || !ts.Matches(pod) {
			t.Errorf("topologySpreadConstraint %s: labelSelector does not select the pods", tsc.TopologyKey)
		}
	}
}

// The network policy lets only Prometheus (monitoring namespace) reach the
// ops port and only the gateway's pods reach the lookup port, and lets the
// pods reach DNS, the NATS servers of the configuration, Vault and HTTPS.
func TestNetworkPolicy(t *testing.T) {
	b := load(t)
	cfg, _ := parseConfig(t, b)
	if len(b.policies) != 1 {
		t.Fatalf("%d NetworkPolicies; the checks expect one for keyrelay's pods", len(b.policies))
	}
	np := b.policies[0]
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("policyTypes %v: want Ingress and Egress", np.Spec.PolicyTypes)
	}
	ports := containerPorts(t, b.deployment.Spec.Template.Spec.Containers[0])

	// Ingress: every rule names its sources and ports; ops from the
	// monitoring namespace, lookup from pods chosen by label.
	allowed := map[string]int{}
	for i, r := range np.Spec.Ingress {
		if len(r.From) == 0 || len(r.Ports) == 0 {
			t.Errorf("ingress rule %d allows every source or every port", i)
			continue
		}
		for _, p := range r.Ports {
			if p.Port == nil {
				t.Errorf("ingress rule %d: a rule without a port opens all of them", i)
				continue
			}
			n := resolvePort(t, ports, *p.Port)
			var name string
			for k, v := range ports {
				if v == n {
					name = k
				}
			}
			allowed[name]++
			for _, peer := range r.From {
				if peer.IPBlock != nil {
					t.Errorf("ingress rule %d: ipBlock source; want Prometheus or the gateway by label", i)
				}
				switch name {
				case "ops":
					if peer.NamespaceSelector == nil || peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
						t.Errorf("ingress rule %d: the ops port opened to %+v, want the monitoring namespace", i, peer)
					}
				case "lookup":
					if peer.PodSelector == nil || len(peer.PodSelector.MatchLabels) == 0 {
						t.Errorf("ingress rule %d: the lookup port opened to %+v, want the gateway's pods by label", i, peer)
					}
				default:
					t.Errorf("ingress rule %d: port %s (%d) is neither ops nor lookup", i, p.Port.String(), n)
				}
			}
		}
	}
	if allowed["ops"] == 0 || allowed["lookup"] == 0 {
		t.Errorf("ingress opens %v; want the ops and the lookup port", allowed)
	}

	// Egress: every rule names its destinations and ports, and together
	// they cover what keyrelay connects to.
	type dest struct {
		port  int32
		proto corev1.Protocol
		what  string
	}
	want := []dest{{53, corev1.ProtocolUDP, "DNS"}, {53, corev1.ProtocolTCP, "DNS"}, {443, corev1.ProtocolTCP, "HTTPS to cloud secret managers"}}
	for _, u := range strings.Split(cfg.Keyrelay.NATS.URL, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			t.Fatalf("keyrelay.nats.url %q: %v", u, err)
		}
		n, _ := strconv.Atoi(pu.Port())
		if n == 0 {
			n = 4222
		}
		want = append(want, dest{int32(n), corev1.ProtocolTCP, "NATS " + pu.Host})
	}
	if addr := cfg.Keyrelay.Providers["hashicorp_vault"]["addr"]; addr != "" {
		pu, err := url.Parse(addr)
		if err != nil {
			t.Fatalf("vault addr %q: %v", addr, err)
		}
		n, _ := strconv.Atoi(pu.Port())
		if n == 0 {
			n = map[string]int{"https": 443, "http": 80}[pu.Scheme]
		}
		want = append(want, dest{int32(n), corev1.ProtocolTCP, "Vault " + pu.Host})
	}
	open := map[dest]bool{}
	for i, r := range np.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			t.Errorf("egress rule %d allows every destination or every port", i)
			continue
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil {
				t.Errorf("egress rule %d: want single numbered ports, got %+v", i, p)
				continue
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			open[dest{p.Port.IntVal, proto, ""}] = true
		}
	}
	for _, w := range want {
		if !open[dest{w.port, w.proto, ""}] {
			t.Errorf("egress: %s needs %d/%s, which no rule allows", w.what, w.port, w.proto)
		}
	}
}

// parseConfig returns keyrelay's configuration from the ConfigMap that the
// container's --config names, parsed and validated by settings.Parse with
// the environment the container gets (getenv), and its raw bytes.
func parseConfig(t *testing.T, b *bundle) (*settings.Config, []byte) {
	t.Helper()
	c := b.deployment.Spec.Template.Spec.Containers[0]
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("container args %v: no --config", c.Args)
	}
	cmName, key := mountedFile(t, b, c.Args[i+1])
	if cmName == "" {
		t.Fatalf("--config %s is not a file mounted from a ConfigMap", c.Args[i+1])
	}
	var data string
	for _, cm := range b.configMaps {
		if cm.Name == cmName {
			var ok bool
			if data, ok = cm.Data[key]; !ok {
				t.Fatalf("ConfigMap %s has no key %q (--config %s)", cmName, key, c.Args[i+1])
			}
		}
	}
	if data == "" {
		t.Fatalf("--config %s: ConfigMap %s is not defined here", c.Args[i+1], cmName)
	}
	cfg, warnings, err := settings.Parse([]byte(data), containerEnv(c))
	if err != nil {
		t.Fatalf("ConfigMap %s %s: %v", cmName, key, err)
	}
	for _, w := range warnings {
		t.Errorf("ConfigMap %s %s: warning: %s", cmName, key, w)
	}
	return cfg, []byte(data)
}

// containerEnv is the environment the container sees: literal values as
// written, values from Secrets replaced by a stand-in long enough for any
// token check. Variables the Deployment does not set are empty.
func containerEnv(c corev1.Container) func(string) string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "stand-in-for-" + e.ValueFrom.SecretKeyRef.Name + "-" + e.ValueFrom.SecretKeyRef.Key
		default:
			env[e.Name] = "1"
		}
	}
	return func(name string) string { return env[name] }
}

// mountedFile finds the volume behind an absolute file path in the
// container and returns the ConfigMap or Secret name and the key that
// file is. It fails the test for a path no read-only configMap or secret
// volume provides.
func mountedFile(t *testing.T, b *bundle, file string) (source, key string) {
	t.Helper()
	spec := b.deployment.Spec.Template.Spec
	c := spec.Containers[0]
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		if m.SubPath != "" {
			t.Errorf("volumeMount %s: subPath mounts do not follow updates of their ConfigMap or Secret", m.Name)
		}
		if !m.ReadOnly {
			t.Errorf("%s is on the writable mount %s", file, m.Name)
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			var items []corev1.KeyToPath
			switch {
			case v.ConfigMap != nil:
				source, items = v.ConfigMap.Name, v.ConfigMap.Items
			case v.Secret != nil:
				source, items = v.Secret.SecretName, v.Secret.Items
			default:
				t.Errorf("%s is on volume %s, which is neither a ConfigMap nor a Secret", file, v.Name)
				return "", ""
			}
			if len(items) == 0 {
				return source, path.Clean(rel)
			}
			for _, it := range items {
				if path.Clean(it.Path) == path.Clean(rel) {
					return source, it.Key
				}
			}
			t.Errorf("%s: volume %s (%s) does not project that file; its items are %v", file, v.Name, source, items)
			return "", ""
		}
	}
	t.Errorf("%s: no volume is mounted there", file)
	return "", ""
}

// The configuration in the ConfigMap is a valid keyrelay configuration for
// this deployment: external NATS cluster, a remote backend whose settings
// are complete with the container's environment, listeners reachable on
// the pod IP, every file it names mounted from a ConfigMap or Secret, and
// no credential written into it.
func TestConfigMapConfig(t *testing.T) {
	b := load(t)
	cfg, raw := parseConfig(t, b)
	c := b.deployment.Spec.Template.Spec.Containers[0]
	getenv := containerEnv(c)

	if cfg.Keyrelay.NATS.URL == "" {
		t.Error("keyrelay.nats.url is empty: serve would start an embedded NATS and write its store on the read-only root")
	}
	if n := cfg.Keyrelay.Streams.Replicas; n < 3 {
		t.Errorf("keyrelay.streams.replicas %d: want 3 on the external JetStream cluster", n)
	}
	if cfg.KeyManagementSystem == "local" || cfg.Keyrelay.Providers["local"] != nil {
		t.Error("the local provider keeps its store on disk; the manifests use a remote backend and no volume")
	}
	if err := app.CheckBackend(cfg, app.Registry()); err != nil {
		t.Error(err)
	}
	g := cfg.Resolve(nil)
	problems, notes := app.MissingSettings(g.Backend, g.Options, getenv)
	for _, p := range append(problems, notes...) {
		t.Errorf("backend %s: %s", g.Backend, p)
	}
	if g.Backend == "hashicorp_vault" {
		vc, err := vault.ConfigFromOptions(g.Options, getenv)
		if err != nil {
			t.Errorf("hashicorp_vault settings with the container's environment: %v", err)
		} else if vc.Method() == vault.AuthToken && !strings.HasPrefix(vc.Token, "stand-in-for-") {
			t.Error("the Vault token is not from a Secret")
		}
	}
	addrPort(t, "keyrelay.http.addr", cfg.Keyrelay.HTTP.Addr)
	addrPort(t, "keyrelay.lookup.addr", cfg.Keyrelay.Lookup.Addr)
	if len(cfg.Keyrelay.Lookup.Clients) == 0 {
		t.Error("keyrelay.lookup.clients is empty: every lookup would be refused")
	}
	var root yamlv3.Node
	if err := yamlv3.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	walkScalars(&root, "", func(key, value string) {
		if strings.HasPrefix(value, "/") {
			mountedFile(t, b, value)
		}
		if credentialKey.MatchString(key) && !strings.HasPrefix(value, settings.EnvPrefix) {
			t.Errorf("config: %s is written in the ConfigMap; use %sNAME with a Secret", key, settings.EnvPrefix)
		}
	})
	if cfg.Keyrelay.Sealing.KeyringFile == "" && len(cfg.Keyrelay.Sealing.KMS) == 0 && len(cfg.Keyrelay.Sealing.GCPKMS) == 0 {
		t.Error("no keyring and no KMS: serve cannot open sealed values")
	}
}

// credentialKey matches configuration keys that hold credentials.
var credentialKey = regexp.MustCompile(`(?i)(^|\.|_)(token|password|secret|secret_id|role_id|api_key|client_secret)$`)

// walkScalars calls fn with the dotted key path and value of every scalar
// mapping value in n.
func walkScalars(n *yamlv3.Node, prefix string, fn func(key, value string)) {
	switch n.Kind {
	case yamlv3.DocumentNode, yamlv3.SequenceNode:
		for _, c := range n.Content {
			walkScalars(c, prefix, fn)
		}
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if v.Kind == yamlv3.ScalarNode {
				fn(p, v.Value)
			} else {
				walkScalars(v, p, fn)
			}
		}
	}
}

// Credentials come from Secrets only, and every Secret key the pod uses is
// documented in README.md's Secrets table (and every documented key is
// used).
func TestSecretsDocumented(t *testing.T) {
	b := load(t)
	c := b.deployment.Spec.Template.Spec.Containers[0]
	type ref struct{ secret, key, via string }
	var used []ref
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			if credentialEnv.MatchString(e.Name) {
				t.Errorf("env %s has a literal value; take it from a Secret with secretKeyRef", e.Name)
			}
			continue
		}
		if cm := e.ValueFrom.ConfigMapKeyRef; cm != nil && credentialEnv.MatchString(e.Name) {
			t.Errorf("env %s comes from ConfigMap %s; credentials belong in a Secret", e.Name, cm.Name)
		}
		if s := e.ValueFrom.SecretKeyRef; s != nil {
			used = append(used, ref{s.Name, s.Key, "env " + e.Name})
		}
	}
	for _, m := range c.VolumeMounts {
		for _, v := range b.deployment.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				t.Errorf("secret volume %s: list its items, so every key is named", v.Name)
			}
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o037 != 0 {
				t.Errorf("secret volume %s: set defaultMode to 0400 or 0440 (the default, 0644, is readable by everyone)", v.Name)
			}
			for _, it := range v.Secret.Items {
				if it.Mode != nil && *it.Mode&0o037 != 0 {
					t.Errorf("secret volume %s item %s: mode %#o is readable by others", v.Name, it.Key, *it.Mode)
				}
				used = append(used, ref{v.Secret.SecretName, it.Key, "file " + path.Join(m.MountPath, it.Path)})
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("the pod uses no Secret")
	}

	documented := readmeSecrets(t)
	for _, u := range used {
		if !slices.Contains(documented, [3]string{u.secret, u.key, u.via}) {
			t.Errorf("README.md, Secrets: no row | `%s` | `%s` | %s |", u.secret, u.key, viaCell(u.via))
		}
	}
	for _, d := range documented {
		if !slices.Contains(used, ref{d[0], d[1], d[2]}) {
			t.Errorf("README.md, Secrets: %s key %s (%s) is documented but the Deployment does not use it", d[0], d[1], d[2])
		}
	}
}

// credentialEnv matches environment variable names that hold credentials.
var credentialEnv = regexp.MustCompile(`(?i)(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|CREDS|API_KEY|PRIVATE_KEY|ROLE_ID)`)

// viaCell is how a use is written in README.md's table.
func viaCell(via string) string {
	kind, what, _ := strings.Cut(via, " ")
	return kind + " `" + what + "`"
}

// readmeSecrets reads the table under "## Secrets" in README.md: rows
// | `secret` | `key` | env `NAME` or file `/path` | description |.
func readmeSecrets(t *testing.T) [][3]string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	in := false
	row := regexp.MustCompile("^\\|\\s*`([^`]+)`\\s*\\|\\s*`([^`]+)`\\s*\\|\\s*(env|file) `([^`]+)`")
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			in = strings.TrimSpace(line) == "## Secrets"
			continue
		}
		if !in {
			continue
		}
		if m := row.FindStringSubmatch(line); m != nil {
			out = append(out, [3]string{m[1], m[2], m[3] + " " + m[4]})
		}
	}
	if len(out) == 0 {
		t.Fatal("README.md: no table of Secrets under \"## Secrets\"")
	}
	return out
}

// The probe paths are what `keyrelay serve` answers on its operations
// listener, and they behave as the probes need while NATS is away: the
// liveness and startup path says 200 (the process is alive: restarting it
// would not bring NATS back), the readiness path 503. Serve runs here on
// the ConfigMap's configuration, with the listener on a loopback port and
// NATS pointed at a closed one.
func TestProbePathsServed(t *testing.T) {
	b := load(t)
	cfg, _ := parseConfig(t, b)
	c := b.deployment.Spec.Template.Spec.Containers[0]

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natsURL := "nats://" + closed.Addr().String()
	closed.Close()
	dir := t.TempDir()
	cfg.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
	if err := events.GenerateKeyringFile(cfg.Keyrelay.Sealing.KeyringFile, "k1"); err != nil {
		t.Fatal(err)
	}
	cfg.Keyrelay.NATS.URL = natsURL
	cfg.Keyrelay.NATS.CredsFile = ""
	cfg.Keyrelay.HTTP.Addr = "127.0.0.1:0"
	off := false
	cfg.Keyrelay.Lookup.Addr, cfg.Keyrelay.Lookup.NATS = settings.LookupOff, &off

	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, cfg, zap.NewNop(), app.ServeOptions{OnListen: func(a string) { listening <- a }})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30s")
		}
	}()
	var ops string
	select {
	case ops = <-listening:
	case err := <-done:
		t.Fatalf("serve ended before its operations listener was up: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("operations listener not up within 30s")
	}
	get := func(p string) (int, string) {
		resp, err := http.Get("http://" + ops + p)
		if err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, p := range []struct {
		name   string
		probe  *corev1.Probe
		status int
	}{{"startupProbe", c.StartupProbe, http.StatusOK}, {"livenessProbe", c.LivenessProbe, http.StatusOK}, {"readinessProbe", c.ReadinessProbe, http.StatusServiceUnavailable}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: not an httpGet probe", p.name)
			continue
		}
		code, body := get(p.probe.HTTPGet.Path)
		if code != p.status {
			t.Errorf("%s: GET %s answered %d %q while NATS is unreachable, want %d", p.name, p.probe.HTTPGet.Path, code, body, p.status)
		}
	}
	if code, _ := get("/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics answered %d (the metrics Service's port)", code)
	}
}

// The Deployment documents where its resource figures come from, and the
// README says so too: a change of numbers should come with its reason.
func TestResourcesExplained(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("## Resources")) || !bytes.Contains(data, []byte("BENCHMARKS.md")) {
		t.Error("README.md: want a \"## Resources\" section that names its sources (BENCHMARKS.md and the measurement)")
	}
	b := load(t)
	lim := b.deployment.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]
	if !bytes.Contains(data, []byte(lim.String())) {
		t.Errorf("README.md does not mention the memory limit %s", lim.String())
	}
}
