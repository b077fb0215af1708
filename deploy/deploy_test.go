package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/outbox"
	"github.com/keyrelay/keyrelay/settings"
)

const (
	rulesFile     = "prometheus/alerts.yml"
	dashboardFile = "grafana/keyrelay.json"
)

// use is one place a metric is named: an alert or a dashboard panel.
type use struct{ where, expr string }

// TestObservabilityUsesExportedMetrics parses the alert rules with
// Prometheus's rule parser (rulefmt.ParseFile, unknown fields refused,
// legacy metric names, every expression and annotation template checked),
// parses every expression of the rules and of the dashboard's panels with
// the PromQL parser, and checks that each metric they name is exported.
//
// "Exported" means one of:
//
//  1. the name is a sample name in a scrape of /metrics of a running
//     `keyrelay serve` (app.Serve on its embedded JetStream server), after
//     a valid event was stored, an invalid one dead-lettered and a key
//     looked up twice (a miss, then a hit); a counter is scraped with its
//     _total, a histogram as _bucket, _sum and _count;
//  2. or serve's registry (ServeOptions.Metrics) describes a metric family
//     of that name (a histogram's for _bucket, _sum and _count): a vector
//     no traffic above gave a series yet, such as keyrelay_retirements_total
//     or the quota metrics. The registry has no list of descriptions, so
//     the test registers a probe gauge under the name: the registry refuses
//     it exactly when a collector it holds describes that name;
//  3. or, for keyrelay_outbox_*, the same holds for the registry of an
//     outbox relay (`keyrelay outbox relay`, built with outbox.NewRelay and
//     not run: every outbox metric is a plain counter, gauge or histogram,
//     so each has a series from the start).
//
// It also checks that every alert has summary, description and
// runbook_url annotations, that each runbook_url names an existing
// document and heading, that README.md's alerts section lists every
// alert, and that every dashboard panel queries the datasource variable.
func TestObservabilityUsesExportedMetrics(t *testing.T) {
	uses := map[string][]use{}
	alerts := checkRules(t, uses)
	checkDashboard(t, uses)
	checkReadmeListsAlerts(t, alerts)

	scraped, serveReg := runServe(t)
	outboxNames, outboxReg := outboxMetrics(t)

	names := make([]string, 0, len(uses))
	for n := range uses {
		names = append(names, n)
	}
	sort.Strings(names)
	how := map[string]int{}
	for _, name := range names {
		switch {
		case scraped[name]:
			how["scraped from serve"]++
		case describes(serveReg, familyOf(name)):
			how["described by serve's registry"]++
		case strings.HasPrefix(name, "keyrelay_outbox_") && (outboxNames[name] || describes(outboxReg, familyOf(name))):
			how["exported by the outbox relay"]++
		default:
			for _, u := range uses[name] {
				t.Errorf("%s names %s, which neither serve nor the outbox relay exports:\n  %s", u.where, name, u.expr)
			}
		}
	}
	t.Logf("%d metric names used; %v", len(names), how)
	if len(names) < 20 {
		t.Fatalf("only %d metric names found in the rules and the dashboard", len(names))
	}
}

// checkRules parses the rules and records their metrics; it returns the
// alert names.
func checkRules(t *testing.T, uses map[string][]use) []string {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.LegacyValidation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("rules: %v", err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	var alerts []string
	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = "record " + r.Record
			} else {
				alerts = append(alerts, name)
			}
			if seen[name] {
				t.Errorf("alert %s defined twice", name)
			}
			seen[name] = true
			if r.Alert != "" {
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("alert %s has no %s annotation", name, a)
					}
				}
				if r.Labels["severity"] == "" {
					t.Errorf("alert %s has no severity label", name)
				}
				checkRunbook(t, name, r.Annotations["runbook_url"])
			}
			for _, m := range metricNames(t, p, "alert "+name, r.Expr) {
				uses[m] = append(uses[m], use{"alert " + name, r.Expr})
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alerts read")
	}
	return alerts
}

// checkRunbook: ref is "path#anchor", path relative to the repository,
// anchor a heading's slug in that file.
func checkRunbook(t *testing.T, alert, ref string) {
	t.Helper()
	path, anchor, _ := strings.Cut(ref, "#")
	raw, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Errorf("alert %s: runbook_url %q: %v", alert, ref, err)
		return
	}
	if anchor == "" {
		return
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok && slug(strings.TrimLeft(h, "#")) == anchor {
			return
		}
	}
	t.Errorf("alert %s: runbook_url %q: no heading with that anchor in %s", alert, ref, path)
}

var slugDrop = regexp.MustCompile(`[^a-z0-9 _-]`)

// slug is a Markdown heading's anchor as GitHub makes it.
func slug(h string) string {
	return strings.ReplaceAll(slugDrop.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), ""), " ", "-")
}

// checkReadmeListsAlerts: the README's alerts section names every alert.
func checkReadmeListsAlerts(t *testing.T, alerts []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n### Alerts\n")
	if !ok {
		t.Fatal("README.md has no ### Alerts section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	for _, a := range alerts {
		if !strings.Contains(section, "`"+a+"`") {
			t.Errorf("README.md's alerts section does not list `%s`", a)
		}
	}
}

// grafanaVars are the dashboard variables an expression may use, with a
// value PromQL accepts in their place.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "${__rate_interval}", "5m", "$__interval", "1m", "$__range", "1h")

// checkDashboard decodes the dashboard and records its panels' metrics.
func checkDashboard(t *testing.T, uses map[string][]use) {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	}
	type panel struct {
		Title      string          `json:"title"`
		Type       string          `json:"type"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []target        `json:"targets"`
		Panels     []panel         `json:"panels"`
	}
	var d struct {
		UID        string  `json:"uid"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type, Name, Query string
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	hasVar := false
	for _, v := range d.Templating.List {
		hasVar = hasVar || v.Type == "datasource" && v.Name == "datasource" && v.Query == "prometheus"
	}
	if !hasVar {
		t.Error("dashboard: no datasource variable named datasource (type prometheus)")
	}
	usesVar := func(ds json.RawMessage) bool {
		var v struct{ UID string }
		return json.Unmarshal(ds, &v) == nil && v.UID == "${datasource}"
	}
	p := parser.NewParser(parser.Options{})
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, pn := range ps {
			walk(pn.Panels)
			if pn.Type == "row" {
				continue
			}
			where := fmt.Sprintf("panel %q", pn.Title)
			if !usesVar(pn.Datasource) {
				t.Errorf("%s does not query the ${datasource} variable", where)
			}
			if len(pn.Targets) == 0 {
				t.Errorf("%s has no query", where)
			}
			for _, tg := range pn.Targets {
				n++
				if !usesVar(tg.Datasource) {
					t.Errorf("%s: a target does not query the ${datasource} variable", where)
				}
				for _, m := range metricNames(t, p, where, grafanaVars.Replace(tg.Expr)) {
					uses[m] = append(uses[m], use{where, tg.Expr})
				}
			}
		}
	}
	walk(d.Panels)
	if n == 0 {
		t.Fatal("dashboard: no queries read")
	}
}

// metricNames parses expr and returns the metric names its selectors name.
func metricNames(t *testing.T, p parser.Parser, where, expr string) []string {
	t.Helper()
	e, err := p.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v\n  %s", where, err, expr)
		return nil
	}
	var out []string
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && name == "" {
				name = m.Value
			}
		}
		if name == "" {
			t.Errorf("%s: a selector without a metric name: %s", where, vs)
		} else {
			out = append(out, name)
		}
		return nil
	})
	if len(out) == 0 {
		t.Errorf("%s: names no metric: %s", where, expr)
	}
	return out
}

// familyOf maps a histogram's sample name to its family.
func familyOf(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(name, s); ok {
			return f
		}
	}
	return name
}

// describes reports whether a collector registered on reg describes a
// metric family named name: registering a probe gauge of that name (with
// a help text no collector has) fails exactly then.
func describes(reg *prometheus.Registry, name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "keyrelay deploy test probe"})
	if err := reg.Register(probe); err != nil {
		return true
	}
	reg.Unregister(probe)
	return false
}

// runServe runs `keyrelay serve` in process on its embedded JetStream
// server, drives the traffic the test doc names and returns the sample
// names of a scrape of /metrics and serve's registry.
func runServe(t *testing.T) (map[string]bool, *prometheus.Registry) {
	t.Helper()
	dir := t.TempDir()
	const token = "deploy-test-token-team-a"
	c := settings.Default()
	c.Keyrelay.NATS.Embedded.Port = testenv.FreePort(t)
	c.Keyrelay.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	c.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
	c.Keyrelay.HTTP.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Clients = map[string]settings.LookupClient{"team-a": {Team: "team-a", Token: token}}
	c.Keyrelay.Providers = map[string]map[string]string{"local": {"path": filepath.Join(dir, "secrets")}}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	runCtx, stop := context.WithCancel(ctx)
	reg := prometheus.NewRegistry()
	ready, lookupAddr, done := make(chan string, 1), make(chan string, 1), make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, c, zap.NewNop(), app.ServeOptions{Metrics: reg,
			OnReady: func(ops string) { ready <- ops }, OnLookup: func(a string) { lookupAddr <- a }})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var ops string
	select {
	case ops = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-ctx.Done():
		t.Fatal("serve not ready")
	}

	kr, err := events.LoadKeyring(c.Keyrelay.Sealing.KeyringFile)
	if err != nil {
		t.Fatal(err)
	}
	// As the commands connect: with the token serve generated.
	conn, err := app.Connect(c, "deploy-test", false, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.NC.Close() })
	js := conn.JS
	ev, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", "key-1", 1, []byte("sk-deploy-test"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewPublisher(js).Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// Not an event: rejected, a redacted copy dead-lettered.
	if _, err := js.Publish(ctx, "keyrelay.events.team-a.key-2.key.created", []byte(`{"not":"an event"}`)); err != nil {
		t.Fatal(err)
	}
	scrape := func() (string, map[string]bool) {
		resp, err := http.Get("http://" + ops + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		names := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(string(body)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || line[0] == '#' {
				continue
			}
			if i := strings.IndexAny(line, "{ "); i > 0 {
				names[line[:i]] = true
			}
		}
		return string(body), names
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		body, _ := scrape()
		if strings.Contains(body, `keyrelay_events_total{outcome="stored",type="key.created"} 1`) &&
			strings.Contains(body, `keyrelay_dlq_entries_total{status="rejected"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack the two events:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lc := &lookupclient.HTTP{BaseURL: "http://" + <-lookupAddr, Token: token}
	for range 2 {
		if s, err := lc.Get(ctx, "key-1"); err != nil || s.Value != "sk-deploy-test" {
			t.Fatalf("lookup: %+v %v", s, err)
		}
	}
	_, names := scrape()
	for _, want := range []string{"keyrelay_consumer_pending", "keyrelay_lookup_requests_total", "keyrelay_build_info", "keyrelay_provider_call_duration_seconds_bucket"} {
		if !names[want] {
			t.Errorf("the scrape lacks %s", want)
		}
	}
	return names, reg
}

// outboxMetrics builds an outbox relay (not run) on its own registry and
// returns its sample names and the registry.
func outboxMetrics(t *testing.T) (map[string]bool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := outbox.NewRelay(outbox.Config{DSN: "postgres://keyrelay@127.0.0.1:1/none"}, nil, zap.NewNop(), reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[mf.GetName()+s] = true
			}
		}
	}
	return names, reg
}
