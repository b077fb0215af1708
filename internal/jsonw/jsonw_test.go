package jsonw

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "<script>&amp;</script>",
		"\x00\x01\x07\b\f\n\r\t\x1f\x7f", "naïve ✓ 日本", "\u2028\u2029", "bad \xff\xfe utf8 \xc3",
		"sk-1234567890abcdef", "emoji 🔑 and \U0010FFFF",
	} {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("AppendString(%q) = %s, encoding/json writes %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a<b>&\"\\\n\u2028\xff")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) {
			t.Fatalf("AppendString(%q) = %s, encoding/json writes %s", s, got[1:], want)
		}
	})
}

func TestAppendTimeMatchesEncodingJSON(t *testing.T) {
	for _, tm := range []time.Time{
		{}, time.Date(2026, 12, 5, 3, 4, 5, 0, time.UTC), time.Date(2026, 12, 5, 3, 4, 5, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.FixedZone("x", 5*3600+30*60)),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("sub-minute", 3600+17)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		want, werr := json.Marshal(tm)
		got, gerr := AppendTime(nil, tm)
		if (werr != nil) != (gerr != nil) || (werr == nil && !bytes.Equal(got, want)) {
			t.Errorf("AppendTime(%v) = %s, %v; encoding/json: %s, %v", tm, got, gerr, want, werr)
		}
	}
	for _, tm := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if _, err := json.Marshal(tm); err == nil {
			t.Fatalf("encoding/json accepted %v", tm)
		}
		o := Begin(nil)
		o.Time("t", tm)
		if _, err := o.End(); err == nil {
			t.Errorf("Object.Time(%v) was accepted; encoding/json refuses it", tm)
		}
	}
}

func TestObjectMembers(t *testing.T) {
	type rec struct {
		S  string            `json:"s"`
		SO string            `json:"so,omitempty"`
		U  uint64            `json:"u"`
		UO uint64            `json:"uo,omitempty"`
		I  int64             `json:"i"`
		BO bool              `json:"bo,omitempty"`
		B  []byte            `json:"b"`
		BB []byte            `json:"bb,omitempty"`
		M  map[string]string `json:"m,omitempty"`
		T  time.Time         `json:"t"`
	}
	for _, r := range []rec{
		{},
		{S: "a&b", SO: "x", U: 1 << 63, UO: 7, I: -42, BO: true, B: []byte{}, BB: []byte{0, 1, 2, 255}, M: map[string]string{"z": "1", "a": "<2>", "é": "\n"}, T: time.Unix(1700000000, 5).UTC()},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		o := Begin(nil)
		o.String("s", r.S)
		o.StringOmit("so", r.SO)
		o.Uint("u", r.U)
		o.UintOmit("uo", r.UO)
		o.Int("i", r.I)
		o.BoolOmit("bo", r.BO)
		o.Bytes("b", r.B)
		o.BytesOmit("bb", r.BB)
		o.StringMapOmit("m", r.M)
		o.Time("t", r.T)
		got, err := o.End()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("got %s, %v\nwant %s", got, err, want)
		}
	}
}
