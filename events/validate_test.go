package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	long := strings.Repeat("a", MaxIDLen)
	tests := map[string]struct {
		id   string
		ok   bool
		want string // substring of the reason
	}{
		"simple":                   {id: "team-a", ok: true},
		"uuid":                     {id: "3f1c9a52-8d4e-4b7a-9f00-2a6c1e5b7d10", ok: true},
		"every allowed symbol":     {id: "a_b-c@d+e=f:g", ok: true},
		"digit first":              {id: "0team", ok: true},
		"single char":              {id: "x", ok: true},
		"max length":               {id: long, ok: true},
		"empty":                    {id: "", want: "required"},
		"too long":                 {id: long + "a", want: "longer than 128"},
		"dot":                      {id: "team.a", want: "'.'"},
		"leading dot":              {id: ".team", want: "'.'"},
		"trailing dot":             {id: "team.", want: "'.'"},
		"dotdot":                   {id: "..", want: `".."`},
		"dotdot inside":            {id: "a..b", want: `".."`},
		"star":                     {id: "*", want: "wildcard"},
		"star inside":              {id: "team*", want: "wildcard"},
		"gt":                       {id: ">", want: "wildcard"},
		"gt inside":                {id: "a>b", want: "wildcard"},
		"NUL":                      {id: "a\x00b", want: "control character"},
		"escape":                   {id: "a\x1b[31m", want: "control character"},
		"DEL":                      {id: "a\x7f", want: "control character"},
		"newline":                  {id: "a\nb", want: "control character"},
		"carriage return":          {id: "a\rb", want: "control character"},
		"tab":                      {id: "a\tb", want: "control character"},
		"space":                    {id: "a b", want: "whitespace"},
		"leading space":            {id: " a", want: "whitespace"},
		"trailing space":           {id: "a ", want: "whitespace"},
		"no-break space":           {id: "a\u00a0b", want: "allowed are"},
		"slash":                    {id: "team/a", want: "path separator"},
		"backslash":                {id: `team\a`, want: "path separator"},
		"parent path":              {id: "../etc", want: `".."`},
		"percent-encoded dot":      {id: "a%2eb", want: "allowed are"},
		"non-ASCII letter":         {id: "tëam", want: "allowed are"},
		"fullwidth dot":            {id: "a\uff0eb", want: "allowed are"},
		"invalid UTF-8":            {id: "a\xffb", want: "UTF-8"},
		"replacement character":    {id: "a\ufffdb", want: "UTF-8"},
		"leading underscore":       {id: "_team", want: "start with a letter or digit"},
		"leading dash":             {id: "-team", want: "start with a letter or digit"},
		"leading at":               {id: "@team", want: "start with a letter or digit"},
		"underscore alone (NoKey)": {id: NoKey, want: "start with a letter or digit"},
		"dollar":                   {id: "$team", want: "allowed are"},
		"quote":                    {id: `a"b`, want: "allowed are"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := ValidateID("team_id", tc.id)
			if tc.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tc.id, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateID(%q) accepted it", tc.id)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not match ErrInvalid", err)
			}
			if f := validationField(t, err); f != "team_id" {
				t.Errorf("Field = %q, want team_id", f)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if len(tc.id) > 3 && strings.Contains(err.Error(), tc.id) {
				t.Errorf("error echoes the id: %v", err)
			}
		})
	}
}

// eventDoc is an event as a generic JSON object, so a test can break it.
type eventDoc map[string]any

func (d eventDoc) bytes(t testing.TB) []byte { t.Helper(); return mustJSON(t, map[string]any(d)) }

func (d eventDoc) data() map[string]any { return d["data"].(map[string]any) }

func (d eventDoc) value() map[string]any { return d.data()["value"].(map[string]any) }

// baseEvent returns a valid event of typ; key events carry a value sealed
// with the example keyring and bound to the event.
func baseEvent(t testing.TB, typ Type) eventDoc {
	t.Helper()
	d := eventDoc{"spec_version": "1.0", "id": "evt-1", "type": string(typ), "time": "2025-01-02T03:04:05Z",
		"team_id": "team-a", "generation": 7}
	if typ.IsKey() {
		d["key_id"] = "key-1"
		d["key_alias"] = "prod-app"
	}
	switch typ {
	case KeyCreated, KeyRotated:
		sv, err := exampleKeyring(t).Seal(bg, []byte("sk-secret"), Binding{TeamID: "team-a", KeyID: "key-1", Generation: 7})
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		_ = json.Unmarshal(mustJSON(t, sv), &v)
		d["data"] = map[string]any{"value": v, "metadata": map[string]any{"env": "prod"}}
		if typ == KeyRotated {
			d.data()["grace_period_seconds"] = 3600
		}
	case KeyUpdated:
		d["data"] = map[string]any{"previous_alias": "old", "metadata": map[string]any{"env": "prod"}}
	case TeamSettingsUpdated:
		d["data"] = map[string]any{"settings": map[string]any{"backend": "hashicorp_vault", "access_mode": "read_only",
			"prefix": "litellm/", "tags": map[string]any{"a": "b"}, "options": map[string]any{"mount": "secret"}}}
	}
	return d
}

func TestDecodeAcceptsEveryType(t *testing.T) {
	for _, typ := range Types {
		t.Run(string(typ), func(t *testing.T) {
			b := baseEvent(t, typ).bytes(t)
			ev, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if ev.Type != typ || ev.TeamID != "team-a" || ev.Generation != 7 {
				t.Errorf("decoded %+v", ev)
			}
			if err := ValidateSchema(string(typ), b); err != nil {
				t.Errorf("schema: %v", err)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	type mut func(d eventDoc)
	set := func(k string, v any) mut { return func(d eventDoc) { d[k] = v } }
	del := func(k string) mut { return func(d eventDoc) { delete(d, k) } }
	setData := func(k string, v any) mut { return func(d eventDoc) { d.data()[k] = v } }
	setValue := func(k string, v any) mut { return func(d eventDoc) { d.value()[k] = v } }
	tests := map[string]struct {
		typ   Type
		mut   mut
		raw   string // used instead of typ+mut when set
		field string // "" with ok false: document-level error
		ok    bool
	}{
		"valid key.created":                {typ: KeyCreated, mut: func(eventDoc) {}, ok: true},
		"unknown type":                     {typ: KeyCreated, mut: set("type", "key.exploded"), field: "type"},
		"future type":                      {typ: KeyCreated, mut: set("type", "key.rotate_requested"), field: "type"},
		"empty type":                       {typ: KeyCreated, mut: set("type", ""), field: "type"},
		"absent type":                      {typ: KeyCreated, mut: del("type"), field: "type"},
		"absent spec_version":              {typ: KeyCreated, mut: del("spec_version"), field: "spec_version"},
		"empty spec_version":               {typ: KeyCreated, mut: set("spec_version", ""), field: "spec_version"},
		"unknown spec_version":             {typ: KeyCreated, mut: set("spec_version", "1.1"), field: "spec_version"},
		"numeric spec_version":             {typ: KeyCreated, mut: set("spec_version", 1), field: "spec_version"},
		"missing id":                       {typ: KeyCreated, mut: del("id"), field: "id"},
		"missing time":                     {typ: KeyCreated, mut: del("time"), field: "time"},
		"zero time":                        {typ: KeyCreated, mut: set("time", "0001-01-01T00:00:00Z"), field: "time"},
		"bad time":                         {typ: KeyCreated, mut: set("time", "yesterday"), field: "time"},
		"missing team_id":                  {typ: KeyCreated, mut: del("team_id"), field: "team_id"},
		"missing key_id":                   {typ: KeyDeleted, mut: del("key_id"), field: "key_id"},
		"missing data on key.created":      {typ: KeyCreated, mut: del("data"), field: "data"},
		"missing data on key.rotated":      {typ: KeyRotated, mut: del("data"), field: "data"},
		"missing data on settings":         {typ: TeamSettingsUpdated, mut: del("data"), field: "data"},
		"missing value":                    {typ: KeyCreated, mut: func(d eventDoc) { delete(d.data(), "value") }, field: "data.value"},
		"missing alg":                      {typ: KeyCreated, mut: func(d eventDoc) { delete(d.value(), "alg") }, field: "data.value.alg"},
		"missing kid":                      {typ: KeyCreated, mut: func(d eventDoc) { delete(d.value(), "kid") }, field: "data.value.kid"},
		"missing nonce":                    {typ: KeyCreated, mut: func(d eventDoc) { delete(d.value(), "nonce") }, field: "data.value.nonce"},
		"missing ct":                       {typ: KeyCreated, mut: func(d eventDoc) { delete(d.value(), "ct") }, field: "data.value.ct"},
		"missing settings":                 {typ: TeamSettingsUpdated, mut: func(d eventDoc) { delete(d.data(), "settings") }, field: "data.settings"},
		"id with dot":                      {typ: KeyCreated, mut: set("id", "evt.1"), field: "id"},
		"team_id with dot":                 {typ: KeyCreated, mut: set("team_id", "team.a"), field: "team_id"},
		"key_id with dot":                  {typ: KeyCreated, mut: set("key_id", "key.1"), field: "key_id"},
		"team_id star":                     {typ: KeyCreated, mut: set("team_id", "*"), field: "team_id"},
		"key_id star":                      {typ: KeyCreated, mut: set("key_id", "*"), field: "key_id"},
		"team_id gt":                       {typ: KeyCreated, mut: set("team_id", ">"), field: "team_id"},
		"key_id gt":                        {typ: KeyDeleted, mut: set("key_id", "k>"), field: "key_id"},
		"team_id dotdot":                   {typ: KeyCreated, mut: set("team_id", ".."), field: "team_id"},
		"key_id dotdot":                    {typ: KeyCreated, mut: set("key_id", "a..b"), field: "key_id"},
		"team_id control character":        {typ: KeyCreated, mut: set("team_id", "team\x01"), field: "team_id"},
		"key_id NUL":                       {typ: KeyCreated, mut: set("key_id", "key\x00"), field: "key_id"},
		"id newline":                       {typ: KeyCreated, mut: set("id", "evt\n1"), field: "id"},
		"team_id whitespace":               {typ: KeyCreated, mut: set("team_id", "team a"), field: "team_id"},
		"key_id tab":                       {typ: KeyCreated, mut: set("key_id", "key\t1"), field: "key_id"},
		"team_id slash":                    {typ: KeyCreated, mut: set("team_id", "team/a"), field: "team_id"},
		"key_id backslash":                 {typ: KeyCreated, mut: set("key_id", `key\1`), field: "key_id"},
		"team_id too long":                 {typ: KeyCreated, mut: set("team_id", strings.Repeat("t", MaxIDLen+1)), field: "team_id"},
		"key_id too long":                  {typ: KeyCreated, mut: set("key_id", strings.Repeat("k", MaxIDLen+1)), field: "key_id"},
		"id too long":                      {typ: KeyCreated, mut: set("id", strings.Repeat("e", MaxIDLen+1)), field: "id"},
		"kid with dot":                     {typ: KeyCreated, mut: setValue("kid", "k.1"), field: "data.value.kid"},
		"kid wildcard":                     {typ: KeyCreated, mut: setValue("kid", "*"), field: "data.value.kid"},
		"key_id on team.settings.updated":  {typ: TeamSettingsUpdated, mut: set("key_id", "key-1"), field: "key_id"},
		"key_id on team.settings.deleted":  {typ: TeamSettingsDeleted, mut: set("key_id", "key-1"), field: "key_id"},
		"empty key_id on settings":         {typ: TeamSettingsUpdated, mut: set("key_id", ""), field: "key_id"},
		"grace_period on key.created":      {typ: KeyCreated, mut: setData("grace_period_seconds", 60), field: "data.grace_period_seconds"},
		"zero grace_period on key.created": {typ: KeyCreated, mut: setData("grace_period_seconds", 0), field: "data.grace_period_seconds"},
		"grace_period on key.rotated":      {typ: KeyRotated, mut: setData("grace_period_seconds", 60), ok: true},
		"negative grace_period":            {typ: KeyRotated, mut: setData("grace_period_seconds", -1), field: "data.grace_period_seconds"},
		"fractional grace_period":          {typ: KeyRotated, mut: setData("grace_period_seconds", 1.5), field: "data.grace_period_seconds"},
		"grace_period on key.updated":      {typ: KeyUpdated, mut: setData("grace_period_seconds", 60), field: "data.grace_period_seconds"},
		"negative generation":              {typ: KeyCreated, mut: set("generation", -1), field: "generation"},
		"string generation":                {typ: KeyCreated, mut: set("generation", "7"), field: "generation"},
		"zero generation":                  {typ: KeyCreated, mut: set("generation", 0), ok: true},
		"absent generation":                {typ: KeyCreated, mut: del("generation"), ok: true},
		"null alias":                       {typ: KeyCreated, mut: set("key_alias", nil), field: "key_alias"},
		"null data":                        {typ: KeyDeleted, mut: set("data", nil), field: "data"},
		"empty data on key.deleted":        {typ: KeyDeleted, mut: set("data", map[string]any{}), ok: true},
		"data on key.deleted":              {typ: KeyDeleted, mut: set("data", map[string]any{"x": 1}), field: "data"},
		"data on team.settings.deleted":    {typ: TeamSettingsDeleted, mut: set("data", map[string]any{"settings": map[string]any{}}), field: "data"},
		"no data on key.updated":           {typ: KeyUpdated, mut: del("data"), ok: true},
		"alias too long":                   {typ: KeyCreated, mut: set("key_alias", strings.Repeat("a", MaxAliasLen+1)), field: "key_alias"},
		"alias at the limit":               {typ: KeyCreated, mut: set("key_alias", strings.Repeat("a", MaxAliasLen)), ok: true},
		"alias line separator":             {typ: KeyCreated, mut: set("key_alias", "a\u2028b"), field: "key_alias"},
		"job id on key.rotated":            {typ: KeyRotated, mut: set("job_id", "job-20261204-1"), ok: true},
		"job id on key.deleted":            {typ: KeyDeleted, mut: set("job_id", "job-1"), ok: true},
		"job id on team.settings.updated":  {typ: TeamSettingsUpdated, mut: set("job_id", "job-1"), field: "job_id"},
		"job id with a dot":                {typ: KeyRotated, mut: set("job_id", "job.1"), field: "job_id"},
		"empty job id":                     {typ: KeyRotated, mut: set("job_id", ""), field: "job_id"},
		"numeric job id":                   {typ: KeyRotated, mut: set("job_id", 7), field: "job_id"},
		"unknown envelope field":           {typ: KeyCreated, mut: set("extra", true), field: "extra"},
		"case variant of a field":          {typ: KeyCreated, mut: func(d eventDoc) { d["Team_ID"] = d["team_id"]; delete(d, "team_id") }, field: "Team_ID"},
		"unknown data field":               {typ: KeyCreated, mut: setData("plaintext", "x"), field: "data.plaintext"},
		"unknown value field":              {typ: KeyCreated, mut: setValue("iv", "x"), field: "data.value.iv"},
		"unknown settings field":           {typ: TeamSettingsUpdated, mut: func(d eventDoc) { d.data()["settings"].(map[string]any)["token"] = "x" }, field: "data.settings.token"},
		"unknown algorithm":                {typ: KeyCreated, mut: setValue("alg", "A128GCM"), field: "data.value.alg"},
		"short nonce":                      {typ: KeyCreated, mut: setValue("nonce", b64(make([]byte, 8))), field: "data.value.nonce"},
		"long nonce":                       {typ: KeyCreated, mut: setValue("nonce", b64(make([]byte, 16))), field: "data.value.nonce"},
		"ct shorter than the tag":          {typ: KeyCreated, mut: setValue("ct", b64(make([]byte, 15))), field: "data.value.ct"},
		"ct of an empty value":             {typ: KeyCreated, mut: setValue("ct", b64(make([]byte, 16))), ok: true},
		"ct at the limit":                  {typ: KeyCreated, mut: setValue("ct", b64(make([]byte, MaxValueBytes+16))), ok: true},
		"ct over the limit":                {typ: KeyCreated, mut: setValue("ct", b64(make([]byte, MaxValueBytes+17))), field: "data.value.ct"},
		"ct not base64":                    {typ: KeyCreated, mut: setValue("ct", "%%%%"), field: "data.value.ct"},
		"plaintext value":                  {typ: KeyCreated, mut: set("data", map[string]any{"value": map[string]any{"alg": "plaintext", "ct": b64([]byte("sk-dev"))}}), ok: true},
		"plaintext value with nonce":       {typ: KeyCreated, mut: set("data", map[string]any{"value": map[string]any{"alg": "plaintext", "nonce": b64(make([]byte, 12)), "ct": "c2s="}}), field: "data.value.nonce"},
		"plaintext value over the limit":   {typ: KeyCreated, mut: set("data", map[string]any{"value": map[string]any{"alg": "plaintext", "ct": b64(make([]byte, MaxValueBytes+1))}}), field: "data.value.ct"},
		"too many metadata entries": {typ: KeyCreated, mut: func(d eventDoc) {
			m := map[string]any{}
			for i := 0; i <= MaxMetadataEntries; i++ {
				m[strings.Repeat("k", i+1)] = "v"
			}
			d.data()["metadata"] = m
		}, field: "data.metadata"},
		"metadata value control character": {typ: KeyCreated, mut: setData("metadata", map[string]any{"env": "a\x00"}), field: "data.metadata.env"},
		"bad access_mode":                  {typ: TeamSettingsUpdated, mut: func(d eventDoc) { d.data()["settings"].(map[string]any)["access_mode"] = "admin" }, field: "data.settings.access_mode"},
		"prefix with dotdot":               {typ: TeamSettingsUpdated, mut: func(d eventDoc) { d.data()["settings"].(map[string]any)["prefix"] = "a/../b" }, field: "data.settings.prefix"},
		"oversized payload": {typ: KeyUpdated, mut: func(d eventDoc) {
			m := map[string]any{}
			for i := 0; i < 300; i++ {
				m[strings.Repeat("k", 100)+string(rune('A'+i%26))+strings.Repeat("x", i/26)] = strings.Repeat("v", 250)
			}
			d.data()["metadata"] = m
		}, field: ""},
		"not JSON":         {raw: `spec_version: 1.0`, field: ""},
		"empty input":      {raw: ``, field: ""},
		"JSON array":       {raw: `[]`, field: ""},
		"JSON null":        {raw: `null`, field: ""},
		"JSON string":      {raw: `"key.created"`, field: ""},
		"two objects":      {raw: `{} {}`, field: ""},
		"invalid UTF-8":    {raw: "{\"key_alias\":\"\xff\"}", field: ""},
		"repeated member":  {raw: `{"spec_version":"1.0","spec_version":"1.0"}`, field: "spec_version"},
		"unknown first":    {raw: `{"sealed":true}`, field: "sealed"},
		"unknown odd name": {raw: `{"a b":1}`, field: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := []byte(tc.raw)
			if tc.mut != nil {
				d := baseEvent(t, tc.typ)
				tc.mut(d)
				b = d.bytes(t)
			}
			ev, err := Decode(b)
			if tc.ok {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if _, err := ev.Encode(); err != nil {
					t.Fatalf("Encode: %v", err)
				}
				if err := ValidateSchema(SchemaEvent, b); err != nil {
					t.Errorf("schema refuses what Decode accepts: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode accepted it")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not match ErrInvalid", err)
			}
			if f := validationField(t, err); f != tc.field {
				t.Errorf("Field = %q, want %q (%v)", f, tc.field, err)
			}
		})
	}
}

func TestDecodeSizeLimit(t *testing.T) {
	b := baseEvent(t, KeyDeleted).bytes(t)
	pad := func(n int) []byte { return append(append([]byte(nil), b...), bytes.Repeat([]byte(" "), n-len(b))...) }
	if _, err := Decode(pad(MaxEventBytes)); err != nil {
		t.Errorf("an event of exactly MaxEventBytes: %v", err)
	}
	_, err := Decode(pad(MaxEventBytes + 1))
	if err == nil || validationField(t, err) != "" || !strings.Contains(err.Error(), "larger than 65536") {
		t.Errorf("an event of MaxEventBytes+1: %v", err)
	}
}

const sentinel = "SENTINEL-7f3a"

// Errors never echo a value: a secret pasted into the wrong field must not
// reach logs, dead letters or confirmation reasons.
func TestErrorsNeverEchoValues(t *testing.T) {
	type mut func(d eventDoc)
	set := func(k string, v any) mut { return func(d eventDoc) { d[k] = v } }
	setValue := func(k string, v any) mut { return func(d eventDoc) { d.value()[k] = v } }
	settings := func(k string, v any) mut {
		return func(d eventDoc) { d.data()["settings"].(map[string]any)[k] = v }
	}
	s := sentinel
	tests := map[string]struct {
		typ Type
		mut mut
		raw string
	}{
		"spec_version":            {typ: KeyCreated, mut: set("spec_version", s)},
		"type":                    {typ: KeyCreated, mut: set("type", s)},
		"type as array":           {typ: KeyCreated, mut: set("type", []any{s})},
		"id":                      {typ: KeyCreated, mut: set("id", s+".x")},
		"team_id":                 {typ: KeyCreated, mut: set("team_id", s+"*")},
		"key_id":                  {typ: KeyCreated, mut: set("key_id", s+" x")},
		"key_id too long":         {typ: KeyCreated, mut: set("key_id", strings.Repeat(s, 20))},
		"key_id on settings":      {typ: TeamSettingsUpdated, mut: set("key_id", s)},
		"time":                    {typ: KeyCreated, mut: set("time", s)},
		"generation":              {typ: KeyCreated, mut: set("generation", s)},
		"alias control char":      {typ: KeyCreated, mut: set("key_alias", s+"\x01")},
		"alias too long":          {typ: KeyCreated, mut: set("key_alias", strings.Repeat(s, 30))},
		"alg":                     {typ: KeyCreated, mut: setValue("alg", s)},
		"kid":                     {typ: KeyCreated, mut: setValue("kid", s+"/x")},
		"nonce":                   {typ: KeyCreated, mut: setValue("nonce", s)},
		"ct":                      {typ: KeyCreated, mut: setValue("ct", s)},
		"ct as number":            {typ: KeyCreated, mut: setValue("ct", 7)},
		"plaintext with kid":      {typ: KeyCreated, mut: set("data", map[string]any{"value": map[string]any{"alg": "plaintext", "kid": s, "ct": b64([]byte(s))}})},
		"metadata value":          {typ: KeyCreated, mut: func(d eventDoc) { d.data()["metadata"] = map[string]any{"env": s + "\n"} }},
		"metadata value too long": {typ: KeyCreated, mut: func(d eventDoc) { d.data()["metadata"] = map[string]any{"env": strings.Repeat(s, 30)} }},
		"previous_alias":          {typ: KeyUpdated, mut: func(d eventDoc) { d.data()["previous_alias"] = s + "\x7f" }},
		"access_mode":             {typ: TeamSettingsUpdated, mut: settings("access_mode", s)},
		"prefix":                  {typ: TeamSettingsUpdated, mut: settings("prefix", "../"+s)},
		"backend too long":        {typ: TeamSettingsUpdated, mut: settings("backend", strings.Repeat(s, 6))},
		"store_virtual_keys":      {typ: TeamSettingsUpdated, mut: settings("store_virtual_keys", s)},
		"unknown field value":     {typ: KeyCreated, mut: set("extra", s)},
		"unknown field name":      {typ: KeyCreated, mut: set(s, "x")},
		"unknown data field":      {typ: KeyCreated, mut: func(d eventDoc) { d.data()[s] = s }},
		"data on key.deleted":     {typ: KeyDeleted, mut: set("data", map[string]any{"x": s})},
		"data as string":          {typ: KeyCreated, mut: set("data", s)},
		"truncated":               {raw: `{"spec_version":"` + s},
		"syntax error after":      {raw: `{"key_alias":"` + s + `" x}`},
		"bare word":               {raw: s},
		"string document":         {raw: `"` + s + `"`},
		"trailing data":           {raw: `{"key_alias":"x"} "` + s + `"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := []byte(tc.raw)
			if tc.mut != nil {
				d := baseEvent(t, tc.typ)
				tc.mut(d)
				b = d.bytes(t)
			}
			if !bytes.Contains(b, []byte(sentinel)) && name != "ct as number" {
				t.Fatalf("test input lost the sentinel")
			}
			_, err := Decode(b)
			if err == nil {
				t.Fatalf("Decode accepted it")
			}
			if strings.Contains(err.Error(), sentinel) {
				t.Errorf("Decode error echoes the value: %v", err)
			}
			if serr := ValidateSchema(SchemaEvent, b); serr == nil {
				t.Errorf("the schema accepts it")
			} else if strings.Contains(serr.Error(), sentinel) {
				t.Errorf("schema error echoes the value: %v", serr)
			}
		})
	}
	// Open errors do not echo the value either.
	kr := exampleKeyring(t)
	for _, sv := range []*SealedValue{PlaintextValue([]byte(sentinel)), {Alg: sentinel, Ciphertext: []byte(sentinel)}} {
		if _, err := kr.Open(bg, sv, Binding{TeamID: "t", KeyID: "k"}); err == nil || strings.Contains(err.Error(), sentinel) {
			t.Errorf("Open(%s) = %v", sv, err)
		}
		if strings.Contains(sv.String(), sentinel) && sv.Alg != sentinel {
			t.Errorf("String() echoes the value: %s", sv)
		}
	}
}

// Decode does not trust encoding/json's lenient reading: names are
// case-sensitive, repeated members and nulls are refused, so no reader can
// see a different event than keyrelay does.
func TestDecodeRefusesAmbiguousJSON(t *testing.T) {
	base := string(baseEvent(t, KeyDeleted).bytes(t))
	tests := map[string]struct {
		doc   string
		field string
	}{
		"case-insensitive override": {strings.Replace(base, `"team_id":"team-a"`, `"team_id":"team-a","TEAM_ID":"team-b"`, 1), "TEAM_ID"},
		"repeated team_id":          {strings.Replace(base, `"team_id":"team-a"`, `"team_id":"team-a","team_id":"team-b"`, 1), "team_id"},
		"escaped repeated name":     {strings.Replace(base, `"team_id":"team-a"`, `"team_id":"team-a","team\u005fid":"team-b"`, 1), "team_id"},
		"null generation":           {strings.Replace(base, `"generation":7`, `"generation":null`, 1), "generation"},
		"generation 7.0":            {strings.Replace(base, `"generation":7`, `"generation":7.0`, 1), "generation"},
		"generation 7e0":            {strings.Replace(base, `"generation":7`, `"generation":7e0`, 1), "generation"},
		"generation 07":             {strings.Replace(base, `"generation":7`, `"generation":07`, 1), ""},
		"generation overflow":       {strings.Replace(base, `"generation":7`, `"generation":18446744073709551616`, 1), "generation"},
	}
	if !strings.Contains(base, `"team_id":"team-a"`) || !strings.Contains(base, `"generation":7`) {
		t.Fatalf("unexpected base %s", base)
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc))
			if err == nil {
				t.Fatal("Decode accepted it")
			}
			if f := validationField(t, err); f != tc.field {
				t.Errorf("Field = %q, want %q (%v)", f, tc.field, err)
			}
		})
	}
	ok := strings.Replace(base, `"generation":7`, `"generation":18446744073709551615`, 1)
	if ev, err := Decode([]byte(ok)); err != nil || ev.Generation != 1<<64-1 {
		t.Errorf("max generation: %v", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	kr := exampleKeyring(t)
	ev, err := NewKeyEvent(bg, kr, KeyCreated, "team-a", "key-1", 3, []byte("sk-round-trip"),
		KeyData{Metadata: map[string]string{"note": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	ev.KeyAlias = "<a&b>"
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// No HTML escaping: a decoded event never grows when encoded again.
	if !bytes.Contains(b, []byte(`"key_alias":"<a&b>"`)) {
		t.Errorf("Encode escapes HTML: %s", b)
	}
	if err := ValidateSchema(string(KeyCreated), b); err != nil {
		t.Errorf("schema: %v", err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	d, err := got.KeyData()
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := kr.Open(bg, d.Value, BindingOf(got)); err != nil || string(pt) != "sk-round-trip" {
		t.Errorf("Open = %q, %v", pt, err)
	}

	// A plaintext value of an empty secret, and data set to JSON null,
	// still encode to something Decode accepts.
	pv := &Event{SpecVersion: SpecVersion, ID: "e1", Type: KeyCreated, Time: ev.Time, TeamID: "t", KeyID: "k",
		Data: mustJSON(t, KeyData{Value: PlaintextValue(nil)})}
	del := &Event{SpecVersion: SpecVersion, ID: "e2", Type: KeyDeleted, Time: ev.Time, TeamID: "t", KeyID: "k",
		Data: json.RawMessage("null")}
	settings := &Event{SpecVersion: SpecVersion, ID: "e3", Type: TeamSettingsUpdated, Time: ev.Time, TeamID: "t",
		Data: mustJSON(t, SettingsData{})}
	for _, e := range []*Event{pv, del, settings} {
		b, err := e.Encode()
		if err != nil {
			t.Fatalf("%s: Encode: %v", e.Type, err)
		}
		if _, err := Decode(b); err != nil {
			t.Errorf("%s: Decode(Encode) = %v\n%s", e.Type, err, b)
		}
	}

	// Encode refuses what Decode would refuse.
	bad := *ev
	bad.TeamID = "team.a"
	if _, err := bad.Encode(); err == nil {
		t.Error("Encode accepted an invalid team id")
	}
	bad = *ev
	bad.Data = json.RawMessage(`{"value":` + string(mustJSON(t, d.Value)) + `,"grace_period_seconds":0}`)
	if _, err := bad.Encode(); err == nil {
		t.Error("Encode accepted grace_period_seconds on key.created")
	}
}

func TestTeamSettingsValidate(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := map[string]struct {
		s     TeamSettings
		field string
	}{
		"empty":              {TeamSettings{}, ""},
		"full":               {TeamSettings{Backend: "aws_secret_manager", Prefix: str(""), AccessMode: AccessWriteOnly, NameTemplate: "{team}/{key}", Description: "d", Tags: map[string]string{"a": "b"}, Options: map[string]string{"region": "eu-west-1"}}, ""},
		"bad access mode":    {TeamSettings{AccessMode: "READ_ONLY"}, "s.access_mode"},
		"prefix dotdot":      {TeamSettings{Prefix: str("..")}, "s.prefix"},
		"prefix control":     {TeamSettings{Prefix: str("a\x00")}, "s.prefix"},
		"backend too long":   {TeamSettings{Backend: strings.Repeat("b", 65)}, "s.backend"},
		"description long":   {TeamSettings{Description: strings.Repeat("d", 1025)}, "s.description"},
		"template control":   {TeamSettings{NameTemplate: "a\tb"}, "s.name_template"},
		"tags empty key":     {TeamSettings{Tags: map[string]string{"": "x"}}, "s.tags"},
		"options long value": {TeamSettings{Options: map[string]string{"k": strings.Repeat("v", 257)}}, "s.options.k"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.s.Validate("s")
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if f := validationField(t, err); f != tc.field {
				t.Errorf("Field = %q, want %q", f, tc.field)
			}
		})
	}
}
