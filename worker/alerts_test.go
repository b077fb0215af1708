package worker

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// TestAlertRulesUseExportedMetrics: every keyrelay_* metric the shipped
// alert rules query is one the worker exports.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range []prometheus.Collector{m.Events, m.EventDuration, m.ProviderCalls, m.ProviderLatency, m.Retries, m.DeadLetters,
			m.Pending, m.AckPending, m.InFlight, m.BreakerOpen, m.Contradictions, m.StreamMsgs, m.StreamBytes, m.StreamLimit, m.StreamDiscarded} {
			c.Describe(ch)
		}
		close(ch)
	}()
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if mm := name.FindStringSubmatch(d.String()); mm != nil {
			exported[mm[1]] = true
		}
	}
	used := regexp.MustCompile(`keyrelay_[a-z_]+`)
	n := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			n++
			for _, metric := range used.FindAllString(r.Expr, -1) {
				if !exported[strings.TrimSuffix(metric, "_total")] && !exported[metric] {
					t.Errorf("alert %s queries %s, which keyrelay does not export", r.Alert, metric)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules read")
	}
}
