package awsconfig

import "strings"

// IsClockSkew reports whether an AWS error with code and (unsanitized)
// message refused the request for its signing time: more than 15 minutes
// from AWS's clock (InvalidSignatureException "Signature expired" or
// "Signature not yet current", RequestTimeTooSkewed). A signature error
// that says nothing of time (a wrong secret key) is not one, unless the
// SDK's clock skew correction judged it one: it compares the signing time
// with the response's Date and wraps the error (full, err's text) as
// "Probable clock skew error". The SDK corrects its signing time from
// that Date and keeps the correction for the client's later calls, so
// such refusals are worth retrying.
func IsClockSkew(code, msg, full string) bool {
	switch code {
	case "RequestTimeTooSkewed":
		return true
	case "InvalidSignatureException", "SignatureDoesNotMatch", "AuthFailure", "AccessDeniedException", "KMSInvalidSignatureException":
		return strings.HasPrefix(msg, "Signature expired") || strings.HasPrefix(msg, "Signature not yet current") ||
			strings.Contains(full, "Probable clock skew error")
	}
	return false
}
