// Package deploy holds no code: this directory ships what runs keyrelay
// (Dockerfile, Kubernetes manifests, the example configuration) and
// observes it (prometheus/alerts.yml, grafana/keyrelay.json).
//
// Its test guarantees that the alert rules parse with Prometheus's own
// rule parser, that every PromQL expression of the rules and of the
// dashboard parses, and that every metric they name is exported by a
// running `keyrelay serve` (or, for keyrelay_outbox_*, by `keyrelay outbox
// relay`); see TestObservabilityUsesExportedMetrics for what "exported"
// means exactly.
package deploy
