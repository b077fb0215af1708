package worker

import (
	"bytes"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// randomText draws strings that exercise every escaping rule.
func randomText(r *rand.Rand) string {
	parts := []string{"", "a", "team-1", "<", ">", "&", `"`, `\`, "\n", "\x00", "\x1f", "é", "日本", "\u2028", "\xff", "🔑", "sk-secret", " "}
	n := r.IntN(5)
	s := ""
	for range n {
		s += parts[r.IntN(len(parts))]
	}
	return s
}

func randomTime(r *rand.Rand) time.Time {
	if r.IntN(5) == 0 {
		return time.Time{}
	}
	t := time.Unix(r.Int64N(4e9), r.Int64N(1e9))
	if r.IntN(2) == 0 {
		return t.UTC()
	}
	return t.In(time.FixedZone("z", (r.IntN(48)-24)*1800))
}

func randomBytes(r *rand.Rand) []byte {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, r.IntN(40))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func randomUint(r *rand.Rand) uint64 {
	if r.IntN(3) == 0 {
		return 0
	}
	return r.Uint64() >> r.IntN(64)
}

func randomEntry(r *rand.Rand) *LedgerEntry {
	e := &LedgerEntry{
		Generation: randomUint(r), EventID: randomText(r), EventType: events.Type(randomText(r)), Status: events.Status(randomText(r)),
		StreamSeq: randomUint(r), Provider: randomText(r), SecretRef: randomText(r), ProviderVersion: randomText(r),
		MetaGeneration: randomUint(r), MetaEventID: randomText(r), Alias: randomText(r), SealedGen: randomUint(r), UpdatedAt: randomTime(r),
		Placement: randomPlacement(r),
	}
	if r.IntN(2) == 0 {
		e.Metadata = map[string]string{}
		for range r.IntN(4) {
			e.Metadata[randomText(r)] = randomText(r)
		}
	}
	if r.IntN(2) == 0 {
		e.Sealed = &events.SealedValue{Alg: randomText(r), KID: randomText(r), EDK: randomBytes(r), Nonce: randomBytes(r), Ciphertext: randomBytes(r)}
	}
	if r.IntN(2) == 0 {
		e.Claim = &Claim{EventID: randomText(r), StreamSeq: randomUint(r), Lane: events.Lane(randomText(r)), Copy: randomUint(r), Generation: randomUint(r), Worker: randomText(r), Until: randomTime(r), Taken: randomTime(r)}
	}
	if r.IntN(2) == 0 {
		e.Retry = &RetryRecord{EventID: randomText(r), StreamSeq: randomUint(r), Lane: events.Lane(randomText(r)), FirstFailure: randomTime(r), Failures: r.IntN(100) - 10}
	}
	if r.IntN(2) == 0 {
		e.Sources = make([]SourceCopy, r.IntN(3))
		for i := range e.Sources {
			e.Sources[i] = SourceCopy{Backend: randomText(r), SecretRef: randomText(r), Placement: randomPlacement(r), Since: randomTime(r)}
		}
	}
	if r.IntN(2) == 0 {
		e.Previous = &PreviousVersion{Version: randomText(r), SecretRef: randomText(r), Until: randomTime(r)}
	}
	return e
}

// randomPlacement draws a placement: none (not recorded), recorded without
// options (an empty or nil map), or with some.
func randomPlacement(r *rand.Rand) *Placement {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return &Placement{}
	case 2:
		return &Placement{TeamOptions: map[string]string{}}
	}
	p := &Placement{TeamOptions: map[string]string{}}
	for range 1 + r.IntN(3) {
		p.TeamOptions[randomText(r)] = randomText(r)
	}
	return p
}

// The ledger entry's encoder writes what encoding/json writes, field for
// field, so entries written before it and readers using encoding/json see
// no difference.
func TestLedgerEntryJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 2026))
	for i := range 5000 {
		e := randomEntry(r)
		sameAsEncodingJSON(t, i, e, e.appendJSON)
	}
	bad := &LedgerEntry{UpdatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := bad.appendJSON(nil); err == nil {
		t.Error("a time encoding/json refuses was encoded")
	}
}

func TestConfirmationJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 2026))
	for i := range 5000 {
		c := &events.Confirmation{
			SpecVersion: randomText(r), EventID: randomText(r), ClaimedEventID: randomText(r), EventType: events.Type(randomText(r)),
			TeamID: randomText(r), KeyID: randomText(r), Generation: randomUint(r), JobID: randomText(r), Status: events.Status(randomText(r)),
			Duplicate: r.IntN(2) == 0, Provider: randomText(r), SecretRef: randomText(r), ProviderVersion: randomText(r), Reason: randomText(r),
			Attempts: randomUint(r), StreamSeq: randomUint(r), Lane: events.Lane(randomText(r)), Time: randomTime(r),
		}
		sameAsEncodingJSON(t, i, c, c.AppendJSON)
	}
}

// sameAsEncodingJSON fails unless appendJSON writes v's encoding/json bytes.
func sameAsEncodingJSON(t *testing.T, i int, v any, appendJSON func([]byte) ([]byte, error)) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := appendJSON(nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("record %d (%T): appended %s, %v\nencoding/json: %s", i, v, got, err, want)
	}
}

// A placement survives the ledger's encoding and encoding/json's decoding
// as it was: not recorded (nil), recorded without team options, or with
// them, on the entry and on its source copies; and recording "no options"
// costs an entry a few bytes only.
func TestLedgerEntryPlacementRoundTrip(t *testing.T) {
	cases := map[string]*Placement{
		"not recorded":       nil,
		"no team options":    {},
		"empty team options": {TeamOptions: map[string]string{}},
		"team options":       {TeamOptions: map[string]string{"namespace": "team-a", "mount": "kv"}},
	}
	for name, pl := range cases {
		t.Run(name, func(t *testing.T) {
			e := &LedgerEntry{Generation: 3, EventID: "ev-1", Provider: "hashicorp_vault", SecretRef: "litellm/k", Placement: pl,
				Sources: []SourceCopy{{Backend: "local", SecretRef: "litellm/k", Placement: pl}}, UpdatedAt: time.Unix(1, 0).UTC()}
			b, err := e.appendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			var got LedgerEntry
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for _, p := range []*Placement{got.Placement, got.Sources[0].Placement} {
				if (p == nil) != (pl == nil) {
					t.Fatalf("placement %+v decoded as %+v from %s", pl, p, b)
				}
				if pl != nil && !maps.Equal(p.TeamOptions, pl.TeamOptions) {
					t.Fatalf("team options %v decoded as %v", pl.TeamOptions, p.TeamOptions)
				}
			}
		})
	}
	bare := &LedgerEntry{Provider: "local", SecretRef: "k", UpdatedAt: time.Unix(1, 0).UTC()}
	placed := *bare
	placed.Placement = &Placement{}
	b1, _ := bare.appendJSON(nil)
	b2, _ := placed.appendJSON(nil)
	if extra := len(b2) - len(b1); extra > len(`,"placement":{}`) {
		t.Fatalf("recording no team options costs %d bytes: %s", extra, b2)
	}
}

// A claim's Taken survives the ledger's encoding and encoding/json's
// decoding, and a claim without one (as older versions wrote) is encoded
// without "taken", as encoding/json writes it, and decoded with none.
func TestLedgerEntryClaimTakenRoundTrip(t *testing.T) {
	until := time.Date(2026, 12, 7, 17, 0, 3, 5, time.UTC)
	for name, taken := range map[string]time.Time{
		"taken":            until.Add(-3 * time.Second),
		"taken in a zone":  until.Add(-time.Second).In(time.FixedZone("z", -5*3600)),
		"none (older)":     {},
		"after its Until?": until.Add(time.Minute),
	} {
		t.Run(name, func(t *testing.T) {
			e := &LedgerEntry{Generation: 2, EventID: "ev-1", UpdatedAt: until,
				Claim: &Claim{EventID: "ev-2", Generation: 3, Worker: "w-1", Until: until, Taken: taken}}
			sameAsEncodingJSON(t, 0, e, e.appendJSON)
			b, err := e.appendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if has := bytes.Contains(b, []byte(`"taken"`)); has == taken.IsZero() {
				t.Errorf("encoded %s: \"taken\" present %v for Taken %v", b, has, taken)
			}
			var got LedgerEntry
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.Claim == nil || !got.Claim.Taken.Equal(taken) || !got.Claim.Until.Equal(until) {
				t.Fatalf("claim %+v decoded as %+v from %s", e.Claim, got.Claim, b)
			}
		})
	}
}
