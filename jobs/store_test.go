package jobs_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keyrelay/keyrelay/jobs"
)

// TestListReportsCorruptRecords: records List cannot use are not dropped
// silently. The good jobs come back with a *ListError (errors.Is
// ErrCorrupt) naming each skipped key and why, each is logged as a warning
// naming its key, and neither the error nor the log holds a record's bytes.
func TestListReportsCorruptRecords(t *testing.T) {
	b := newBare(t)
	core, logs := observer.New(zapcore.WarnLevel)
	b.deps.Store.Logger = zap.New(core)
	good1, _ := b.job(t, 2, 0)
	good2, _ := b.job(t, 3, 0)

	const sentinel = "SENTINEL-record-bytes"
	planted := map[string]struct {
		record, reason string
	}{
		"job.job-not-json":    {record: `{"id":"job-not-json","state":"` + sentinel, reason: "not JSON"},
		"job.job-wrong-type":  {record: `{"id":"job-wrong-type","total":"` + sentinel + `"}`, reason: "field total has the wrong type"},
		"job.job-other-key":   {record: `{"id":"job-` + sentinel + `","state":"running"}`, reason: "not the record of the job its key names"},
		"job.job-bad-state":   {record: `{"id":"job-bad-state","state":"` + sentinel + `"}`, reason: "invalid (keyrelay jobs status job-bad-state says why)"},
		"not-a-job-key-at-al": {record: `{"state":"running"}`, reason: "not the record of the job its key names"},
	}
	for key, p := range planted {
		if _, err := b.deps.Store.KV.Put(b.ctx, key, []byte(p.record)); err != nil {
			t.Fatal(err)
		}
	}

	all, err := b.deps.Store.List(b.ctx)
	var le *jobs.ListError
	if !errors.Is(err, jobs.ErrCorrupt) || !errors.As(err, &le) {
		t.Fatalf("List: %v, want a *ListError matching ErrCorrupt", err)
	}
	var ids []string
	for _, j := range all {
		ids = append(ids, j.ID)
	}
	if want := []string{good2.ID, good1.ID}; !slices.Equal(ids, want) && !slices.Equal(ids, []string{good1.ID, good2.ID}) {
		t.Fatalf("List returned %v, want the good jobs %v", ids, want)
	}
	if len(le.Skipped) != len(planted) {
		t.Fatalf("skipped %+v, want the %d planted records", le.Skipped, len(planted))
	}
	for _, sk := range le.Skipped {
		p, ok := planted[sk.Key]
		if !ok {
			t.Fatalf("skipped %s, which is a good record", sk.Key)
		}
		if !strings.Contains(sk.Reason, p.reason) || sk.Revision == 0 {
			t.Errorf("%s: reason %q revision %d, want %q and the revision read", sk.Key, sk.Reason, sk.Revision, p.reason)
		}
		if !strings.Contains(err.Error(), sk.Key) {
			t.Errorf("the error does not name %s: %v", sk.Key, err)
		}
	}
	if strings.Contains(err.Error(), sentinel) {
		t.Fatalf("the error holds a record's bytes: %v", err)
	}
	warned := map[string]bool{}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if f.Key == "key" {
				warned[f.String] = true
			}
			if strings.Contains(f.String, sentinel) {
				t.Fatalf("the log holds a record's bytes: %s %v", e.Message, e.Context)
			}
		}
		if e.Level != zapcore.WarnLevel || strings.Contains(e.Message, sentinel) {
			t.Fatalf("log entry %s %q", e.Level, e.Message)
		}
	}
	for key := range planted {
		if !warned[key] {
			t.Errorf("no warning names %s", key)
		}
	}

	// Without corrupt records, List returns no error.
	for key := range planted {
		if err := b.deps.Store.KV.Delete(b.ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if all, err := b.deps.Store.List(b.ctx); err != nil || len(all) != 2 {
		t.Fatalf("List after the corrupt records went: %d jobs, %v", len(all), err)
	}
}
