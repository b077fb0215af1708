package worker

import (
	"errors"
	"testing"
)

func TestParsePubAck(t *testing.T) {
	for name, c := range map[string]struct {
		in      string
		seq     uint64
		dup     bool
		casFail bool
		err     bool
	}{
		"plain":      {in: `{"stream":"KV_KEYRELAY_LEDGER","seq":42}`, seq: 42},
		"domain":     {in: `{"stream":"S","domain":"hub","seq":7}`, seq: 7},
		"duplicate":  {in: `{"stream":"S","seq":9,"duplicate":true}`, seq: 9, dup: true},
		"cas":        {in: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"S","seq":0}`, err: true, casFail: true},
		"cas-r3":     {in: `{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}`, err: true, casFail: true},
		"limit":      {in: `{"error":{"code":503,"err_code":10077,"description":"maximum messages per subject exceeded"}}`, err: true},
		"no-seq":     {in: `{"stream":"S"}`, err: true},
		"garbage":    {in: `not json "error"`, err: true},
		"bad-number": {in: `{"seq":x}`, err: true},
	} {
		t.Run(name, func(t *testing.T) {
			ack, err := parsePubAck([]byte(c.in))
			if (err != nil) != c.err {
				t.Fatalf("err %v, want error %v", err, c.err)
			}
			if isWrongLastSequence(err) != c.casFail {
				t.Fatalf("isWrongLastSequence(%v) = %v", err, !c.casFail)
			}
			if err == nil && (ack.seq != c.seq || ack.duplicate != c.dup) {
				t.Fatalf("got %+v", ack)
			}
			var pe *pubAckError
			if name == "limit" && (!errors.As(err, &pe) || !isPerSubjectLimit(err)) {
				t.Fatalf("per-subject limit not recognised: %v", err)
			}
		})
	}
}
