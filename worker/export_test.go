package worker

import "context"

// SetReleaseHook makes every claim release run f first and fail with its
// error; it returns the function that removes it.
func SetReleaseHook(f func() error) (restore func()) {
	releaseHook.Store(&f)
	return func() { releaseHook.Store(nil) }
}

// SetCommitHook makes every ledger commit run f first (with the event's
// id) and fail with its error; it returns the function that removes it.
func SetCommitHook(f func(eventID string) error) (restore func()) {
	commitHook.Store(&f)
	return func() { commitHook.Store(nil) }
}

// Single reads the bucket's replica count now and returns single's answer
// (tests).
func (l *Ledger) Single(ctx context.Context) bool {
	l.checkReplicas(ctx)
	return l.single()
}
