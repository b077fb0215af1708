package outbox

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrGenerationRequired is returned by Enqueue (and recorded as the reason
// of a failed row by the relay) for a key.created or key.rotated event
// whose value is sealed but whose generation is empty: a sealed value is
// bound to its event's generation, so the relay cannot fill it in. Take a
// generation from NextGeneration before sealing.
var ErrGenerationRequired = errors.New("generation is empty but data.value is sealed (bound to generation 0); set the generation before sealing, e.g. from keyrelay_outbox_next_generation()")

// ErrNotReady is wrapped by Relay.Ready while the relay cannot make
// progress.
var ErrNotReady = errors.New("outbox relay not ready")

// PermanentError marks a row that can never be published; the relay
// records Reason in last_error and moves on. Reason never holds a secret
// value.
type PermanentError struct {
	Reason string
}

func (e *PermanentError) Error() string { return "cannot publish: " + e.Reason }

func permanent(format string, args ...any) *PermanentError {
	return &PermanentError{Reason: fmt.Sprintf(format, args...)}
}

// sanitizeDBError keeps what an operator needs from a PostgreSQL error
// (what failed, the SQLSTATE) and drops DETAIL, which can quote row data.
func sanitizeDBError(err error) string {
	if err == nil {
		return ""
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Sprintf("postgres: %s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	return err.Error()
}
