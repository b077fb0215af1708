package worker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
)

// TrimLane runs one trimming round on lane l's stream (trimLane).
func TrimLane(ctx context.Context, js jetstream.JetStream, l events.Lane) (TrimResult, error) {
	return trimLane(ctx, js, l)
}

// TrimRound runs one trimming round on both lane streams as a worker
// does, counting into m.
func TrimRound(ctx context.Context, js jetstream.JetStream, m *Metrics) {
	newLaneTrimmer(js, m, zap.NewNop()).round(ctx)
}
