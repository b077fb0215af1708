package outbox_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/outbox"
)

// `keyrelay outbox status` lists failed rows with their ids, which come
// from the row's payload: for a row that failed because it is malformed
// they are whatever the gateway wrote there (a value pasted into the wrong
// field, an object, terminal escapes). Only ids that are valid ids are
// shown.
func TestStatusDoesNotEchoInvalidIDs(t *testing.T) {
	t.Parallel()
	const sentinel = "sk-SENTINEL-5d1e0c7a9b"
	b64 := base64.StdEncoding.EncodeToString([]byte(sentinel))
	db := migratedDB(t)
	conn := connect(t, dsnFor(db))
	now := time.Now().UTC().Format(time.RFC3339Nano)
	rows := []string{
		fmt.Sprintf(`{"spec_version":"1.0","id":"e1","type":"key.created","time":%q,"team_id":{"value":{"alg":"plaintext","ct":%q}},"key_id":"k1"}`, now, b64),
		fmt.Sprintf(`{"spec_version":"1.0","id":"value %s","type":"key.created","time":%q,"team_id":"t1","key_id":"k1"}`, sentinel, now),
		fmt.Sprintf(`{"spec_version":"1.0","id":"e3","type":"key.created","time":%q,"team_id":"t1","key_id":"\u001b]0;%s\u0007"}`, now, sentinel),
	}
	for _, p := range rows {
		insertRaw(t, conn, p)
	}
	// As the relay marks them (see TestFailedRowsMarkedWithReason).
	if _, err := conn.Exec(context.Background(), "UPDATE keyrelay.keyrelay_outbox SET state = 'failed', last_error = 'invalid event'"); err != nil {
		t.Fatal(err)
	}
	st, err := outbox.ReadStatus(context.Background(), conn, outbox.DefaultSchema, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.FailedRows) != len(rows) {
		t.Fatalf("status lists %d failed rows, want %d", len(st.FailedRows), len(rows))
	}
	for _, f := range st.FailedRows {
		line := fmt.Sprintf("%+v", f)
		if strings.Contains(line, sentinel) || strings.Contains(line, b64) || strings.ContainsRune(line, 0x1b) {
			t.Errorf("failed row seq %d: status shows %q", f.Seq, line)
		}
	}
}
