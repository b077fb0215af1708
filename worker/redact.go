package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
)

// RedactedEntry is what the DLQ keeps of a message whose bytes cannot be
// proven sealed (it failed validation, or carried a plaintext value): what
// an operator needs to find and fix the publisher, and none of the payload
// bytes, which may hold a value.
type RedactedEntry struct {
	Redacted bool   `json:"redacted"`
	Reason   string `json:"reason"`
	Subject  string `json:"subject"`
	// Size and SHA256 identify the original bytes (for matching against
	// the publisher's copy).
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
	// Claimed holds the members of the original that read as ids, a known
	// type or a generation. They are what the message claimed, not trusted.
	Claimed ClaimedFields `json:"claimed,omitzero"`
	// Headers keeps the original's headers that are safe to keep (message
	// id and trace context, when they look like ids); HeaderNames lists the
	// names of the others.
	Headers     map[string]string `json:"headers,omitempty"`
	HeaderNames []string          `json:"header_names,omitempty"`
}

// ClaimedFields are members read loosely from an invalid message, each kept
// only when it passes the id (or type, or number) rules.
type ClaimedFields struct {
	ID         string `json:"id,omitempty"`
	Type       string `json:"type,omitempty"`
	TeamID     string `json:"team_id,omitempty"`
	KeyID      string `json:"key_id,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
}

// keptHeaders are the headers a redacted entry may keep, when their values
// match safeHeader.
var keptHeaders = []string{jetstream.MsgIDHeader, "traceparent", "tracestate", "Keyrelay-Job-Id"}

var (
	safeHeader     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_\-@+=:,]{0,127}$`)
	safeHeaderName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9\-_]{0,63}$`)
)

// claimed reads the members an invalid message claims, keeping each only
// when it is well-formed.
func claimed(data []byte) ClaimedFields {
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and only the exact member names count.
	var top map[string]json.RawMessage
	var c ClaimedFields
	if json.Unmarshal(data, &top) != nil {
		return c
	}
	str := func(member string) string {
		var s string
		if json.Unmarshal(top[member], &s) != nil || events.ValidateID(member, s) != nil {
			return ""
		}
		return s
	}
	c.ID, c.TeamID, c.KeyID = str("id"), str("team_id"), str("key_id")
	var t string
	if json.Unmarshal(top["type"], &t) == nil && events.Type(t).Known() {
		c.Type = t
	}
	var g uint64
	if json.Unmarshal(top["generation"], &g) == nil {
		c.Generation = g
	}
	return c
}

// claimedID is the id an invalid message claims, if it reads as one.
func claimedID(data []byte) string { return claimed(data).ID }

// redactedCopy is the DLQ copy of a message that cannot be proven sealed.
func redactedCopy(msg jetstream.Msg, reason string) []byte {
	return redactedBytes(msg.Subject(), msg.Headers(), msg.Data(), reason)
}

func redactedBytes(subject string, h map[string][]string, data []byte, reason string) []byte {
	sum := sha256.Sum256(data)
	e := RedactedEntry{Redacted: true, Reason: reason, Subject: subject, Size: len(data), SHA256: hex.EncodeToString(sum[:]),
		Claimed: claimed(data)}
	for name, vals := range h {
		kept := false
		for _, k := range keptHeaders {
			if name == k && len(vals) == 1 && safeHeader.MatchString(vals[0]) {
				if e.Headers == nil {
					e.Headers = map[string]string{}
				}
				e.Headers[name], kept = vals[0], true
			}
		}
		if !kept && safeHeaderName.MatchString(name) {
			e.HeaderNames = append(e.HeaderNames, name)
		} else if !kept {
			e.HeaderNames = append(e.HeaderNames, "(unreadable header name, "+strconv.Itoa(len(name))+" bytes)")
		}
	}
	slices.Sort(e.HeaderNames)
	b, err := json.Marshal(e)
	if err != nil {
		return []byte(`{"redacted":true}`)
	}
	return b
}
