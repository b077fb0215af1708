package kumofront

import (
	"net/http"
	"strings"
	"time"
)

// SignatureWindow is how far a request's SigV4 signing time (X-Amz-Date)
// may be from the server's clock, either way: AWS refuses a request that
// reaches it more than 15 minutes after its date stamp, or whose date
// stamp is more than 15 minutes in the future (the Secrets Manager API
// reference, Common Errors, RequestExpired).
const SignatureWindow = 15 * time.Minute

// amzDateFormat is SigV4's X-Amz-Date format (ISO 8601 basic, UTC).
const amzDateFormat = "20060102T150405Z"

// SetClockOffset sets the front's clock to the host's clock plus d, as if
// AWS's clock and the client's disagreed by d (a client whose clock is
// behind AWS's is d > 0). The front checks every signed Secrets Manager
// request's X-Amz-Date against its clock (SignatureWindow; requests it
// passes to kumo unchanged, such as STS's, are not checked) and sends its
// clock in every response's Date header, from which the AWS SDK measures the skew
// and corrects its signing time (the SDK's clock skew correction). The
// default offset is 0.
func (s *Server) SetClockOffset(d time.Duration) {
	s.clock.Store(int64(d))
}

// Now returns the front's clock: the host's clock plus the offset set by
// SetClockOffset.
func (s *Server) Now() time.Time {
	return time.Now().Add(time.Duration(s.clock.Load())).UTC()
}

// SetSkewErrorCode sets the error code of a refusal for the signing time:
// "InvalidSignatureException" (the default: what Secrets Manager answers,
// with the messages below) or "RequestExpired" (the code Secrets Manager's
// API reference lists among its common errors, HTTP 400, "Request has
// expired."). The AWS SDK's retryer corrects and retries only the first
// (its clock skew codes); after either it keeps the skew the response's
// Date showed for the client's next calls.
func (s *Server) SetSkewErrorCode(code string) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.skewCode = code
}

// SkewRejections counts the requests refused for their signing time.
func (s *Server) SkewRejections() int {
	return int(s.skewRejected.Load())
}

// setDate sets the response's Date header to the front's clock. Go's
// server keeps a Date a handler set.
func (s *Server) setDate(h http.Header) {
	h.Set("Date", s.Now().Format(http.TimeFormat))
}

// checkSigningTime refuses a SigV4-signed request whose X-Amz-Date is
// more than SignatureWindow from the front's clock, the way Secrets
// Manager (a JSON 1.1 service) does: HTTP 400, __type
// InvalidSignatureException, with AWS's message ("Signature expired: ...
// is now earlier than ... (... - 15 min.)", or "Signature not yet current:
// ... is still later than ... (... + 15 min.)"). Unsigned requests and
// requests without X-Amz-Date are left to the rest of the front (kumo
// checks no signature).
func (s *Server) checkSigningTime(r *http.Request) *apiError {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		return nil
	}
	v := r.Header.Get("X-Amz-Date")
	if v == "" {
		return nil
	}
	signed, err := time.Parse(amzDateFormat, v)
	if err != nil {
		return errf(http.StatusBadRequest, "IncompleteSignature", "Date must be in ISO-8601 'basic format'. Got '%s'. See http://en.wikipedia.org/wiki/ISO_8601", v)
	}
	now := s.Now()
	s.fmu.Lock()
	code := s.skewCode
	s.fmu.Unlock()
	if code == "RequestExpired" && (signed.Before(now.Add(-SignatureWindow)) || signed.After(now.Add(SignatureWindow))) {
		s.skewRejected.Add(1)
		return errf(http.StatusBadRequest, "RequestExpired", "Request has expired.")
	}
	switch {
	case signed.Before(now.Add(-SignatureWindow)):
		s.skewRejected.Add(1)
		return errf(http.StatusBadRequest, "InvalidSignatureException", "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			v, now.Add(-SignatureWindow).Format(amzDateFormat), now.Format(amzDateFormat))
	case signed.After(now.Add(SignatureWindow)):
		s.skewRejected.Add(1)
		return errf(http.StatusBadRequest, "InvalidSignatureException", "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			v, now.Add(SignatureWindow).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	return nil
}
