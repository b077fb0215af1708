package ownership

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A compare-and-set refusal is a conflict whichever way it arrives: as
// nats.go's KV errors, or as the server's API error under either code
// (10071 on one replica, 10164 on a replicated stream), wrapped or not.
func TestIsConflict(t *testing.T) {
	api := func(code jetstream.ErrorCode) error {
		return &jetstream.APIError{Code: 400, ErrorCode: code, Description: "wrong last sequence"}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"key exists", jetstream.ErrKeyExists, true},
		{"revision mismatch", fmt.Errorf("update: %w", jetstream.ErrKeyRevisionMismatch), true},
		{"10071", api(jetstream.JSErrCodeStreamWrongLastSequence), true},
		{"10164 wrapped", fmt.Errorf("put: %w", api(jetstream.JSErrCodeStreamWrongLastSequenceConstant)), true},
		{"another API error", api(jetstream.JSErrCodeStreamNotFound), false},
		{"timeout", errors.New("nats: timeout"), false},
		{"nil", nil, false},
	} {
		if got := isConflict(tc.err); got != tc.want {
			t.Errorf("%s: isConflict = %v, want %v", tc.name, got, tc.want)
		}
	}
}
