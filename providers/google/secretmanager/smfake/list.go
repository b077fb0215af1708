package smfake

import (
	"context"
	"sort"
	"strings"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Page sizes of ListSecrets, as the API reference gives them.
const (
	// DefaultListPageSize is the page size when page_size is 0.
	DefaultListPageSize = 25000
	// MaxListPageSize is the largest page_size accepted.
	MaxListPageSize = 25000
)

// ListSecrets lists the parent's secrets in name order, page_size at a
// time (0 means DefaultListPageSize; negative or above MaxListPageSize is
// InvalidArgument), resuming after page_token. The filter supports the
// subset of the list filtering syntax keyrelay uses: terms joined by AND
// (or by spaces), each one of labels.KEY=VALUE (exact), labels.KEY:VALUE
// (substring), labels.KEY:* (presence) and name:VALUE (substring of the
// secret id), values optionally double-quoted. Anything else (OR, NOT,
// parentheses, time comparisons) is InvalidArgument.
func (s *Server) ListSecrets(_ context.Context, req *secretmanagerpb.ListSecretsRequest) (*secretmanagerpb.ListSecretsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListSecrets"); err != nil {
		return nil, err
	}
	parent := req.GetParent()
	if !strings.HasPrefix(parent, "projects/") || strings.Count(parent, "/") != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid parent %q", parent)
	}
	size := int(req.GetPageSize())
	if size < 0 || size > MaxListPageSize {
		return nil, status.Errorf(codes.InvalidArgument, "page_size must be between 0 and %d", MaxListPageSize)
	}
	if size == 0 {
		size = DefaultListPageSize
	}
	terms, err := parseFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	prefix := parent + "/secrets/"
	var names []string
	for n, sec := range s.secrets {
		if strings.HasPrefix(n, prefix) && matchTerms(sec.pb, terms) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	start := 0
	if t := req.GetPageToken(); t != "" {
		after := t
		if !strings.HasPrefix(after, prefix) {
			return nil, status.Error(codes.InvalidArgument, "invalid page token")
		}
		start = sort.SearchStrings(names, after)
		if start < len(names) && names[start] == after {
			start++
		}
	}
	end := min(start+size, len(names))
	resp := &secretmanagerpb.ListSecretsResponse{TotalSize: int32(len(names))}
	for _, n := range names[start:end] {
		resp.Secrets = append(resp.Secrets, proto.Clone(s.secrets[n].pb).(*secretmanagerpb.Secret))
	}
	if end < len(names) {
		resp.NextPageToken = names[end-1]
	}
	return resp, nil
}

type filterTerm struct {
	field, op, value string
}

func parseFilter(f string) ([]filterTerm, error) {
	var terms []filterTerm
	for _, w := range strings.Fields(f) {
		if w == "AND" {
			continue
		}
		i := strings.IndexAny(w, "=:")
		if i <= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "unsupported filter term %q", w)
		}
		t := filterTerm{field: w[:i], op: w[i : i+1], value: w[i+1:]}
		if len(t.value) >= 2 && t.value[0] == '"' && t.value[len(t.value)-1] == '"' {
			t.value = t.value[1 : len(t.value)-1]
		}
		if t.field != "name" && !strings.HasPrefix(t.field, "labels.") || t.field == "name" && t.op != ":" {
			return nil, status.Errorf(codes.InvalidArgument, "unsupported filter term %q", w)
		}
		terms = append(terms, t)
	}
	return terms, nil
}

func matchTerms(sec *secretmanagerpb.Secret, terms []filterTerm) bool {
	for _, t := range terms {
		if t.field == "name" {
			id := sec.GetName()[strings.LastIndexByte(sec.GetName(), '/')+1:]
			if !strings.Contains(id, t.value) {
				return false
			}
			continue
		}
		v, ok := sec.GetLabels()[strings.TrimPrefix(t.field, "labels.")]
		switch {
		case !ok:
			return false
		case t.op == "=" && v != t.value:
			return false
		case t.op == ":" && t.value != "*" && !strings.Contains(v, t.value):
			return false
		}
	}
	return true
}
