package ownership

import "context"

// GrantedOnce waits until the request is stored and answers once, as one
// of Granted's checks does, whether the requester may write by claims.
func (r *Request) GrantedOnce(ctx context.Context) (bool, error) {
	select {
	case <-r.stored:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	r.mu.Lock()
	since := r.since
	r.mu.Unlock()
	var seen observation
	return r.granted(ctx, since, &seen)
}
