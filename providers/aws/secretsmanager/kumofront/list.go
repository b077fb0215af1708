package kumofront

import (
	"encoding/base64"
	"regexp"
	"sort"
	"strings"
)

// MaxListResults is ListSecrets' MaxResults limit (and its default).
const MaxListResults = 100

// filterValueRE is the Filter Values pattern of the API reference.
var filterValueRE = regexp.MustCompile(`^\!?[a-zA-Z0-9 :_@/+=.\-!]*$`)

type listFilter struct {
	Key    string
	Values []string
}

// listSecrets answers ListSecrets from the front's own state (kumo knows
// neither the front's tags nor its deletion schedule). It follows the API
// reference: MaxResults 1..100 (default 100), an opaque NextToken, secrets
// scheduled for deletion only with IncludePlannedDeletion, Filters ANDed
// with one another, each filter's Values ORed, "name", "tag-key" and
// "tag-value" matched by case-sensitive prefix and a value starting with
// '!' negated. Secrets are returned in name order (SortOrder "desc"
// reverses it). The "description", "primary-region", "owning-service" and
// "all" filters are not supported by the front (InvalidParameterException).
func (s *Server) listSecrets(body []byte) (any, *apiError) {
	var in struct {
		MaxResults             *int
		NextToken              *string
		IncludePlannedDeletion *bool
		Filters                []listFilter
		SortOrder              *string
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	max := MaxListResults
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > MaxListResults {
			return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value between 1 and %d", MaxListResults)
		}
		max = *in.MaxResults
	}
	desc := false
	if in.SortOrder != nil {
		switch *in.SortOrder {
		case "asc":
		case "desc":
			desc = true
		default:
			return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'sortOrder' failed to satisfy constraint: Member must satisfy enum value set: [asc, desc]")
		}
	}
	if len(in.Filters) > 10 {
		return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'filters' failed to satisfy constraint: Member must have length less than or equal to 10")
	}
	for _, f := range in.Filters {
		switch f.Key {
		case "name", "tag-key", "tag-value":
		case "description", "primary-region", "owning-service", "all":
			return nil, errf(400, "InvalidParameterException", "the test front does not support the %q filter", f.Key)
		default:
			return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'filters.1.member.key' failed to satisfy constraint: Member must satisfy enum value set: [all, description, name, tag-key, tag-value, primary-region, owning-service]")
		}
		if len(f.Values) < 1 || len(f.Values) > 10 {
			return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'filters.1.member.values' failed to satisfy constraint: Member must have length between 1 and 10")
		}
		for _, v := range f.Values {
			if len(v) > 512 || !filterValueRE.MatchString(v) {
				return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'filters.1.member.values' failed to satisfy constraint: Member must satisfy regular expression pattern")
			}
		}
	}
	after := ""
	if in.NextToken != nil {
		b, err := base64.RawURLEncoding.DecodeString(*in.NextToken)
		if err != nil || len(b) == 0 {
			return nil, errf(400, "InvalidNextTokenException", "The NextToken value is invalid.")
		}
		after = string(b)
	}
	planned := in.IncludePlannedDeletion != nil && *in.IncludePlannedDeletion
	var names []string
	for n, e := range s.secrets {
		if (e.deletedAt == nil || planned) && matchFilters(e, in.Filters) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if desc {
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
	}
	list := []map[string]any{}
	var next string
	for _, n := range names {
		if after != "" && ((!desc && n <= after) || (desc && n >= after)) {
			continue
		}
		if len(list) == max {
			next = base64.RawURLEncoding.EncodeToString([]byte(list[len(list)-1]["Name"].(string)))
			break
		}
		list = append(list, s.listEntry(s.secrets[n]))
	}
	resp := map[string]any{"SecretList": list}
	if next != "" {
		resp["NextToken"] = next
	}
	return resp, nil
}

func (s *Server) listEntry(e *entry) map[string]any {
	m := map[string]any{"ARN": e.arn, "Name": e.name}
	stages := map[string][]string{}
	for _, v := range e.versions {
		if st := e.stagesOf(v.id); len(st) > 0 {
			stages[v.id] = st
		}
	}
	m["SecretVersionsToStages"] = stages
	if len(e.versions) > 0 {
		m["CreatedDate"] = epoch(e.versions[0].created)
		m["LastChangedDate"] = epoch(e.versions[len(e.versions)-1].created)
	}
	if len(e.tags) > 0 {
		m["Tags"] = e.tags
	}
	if e.deletedAt != nil {
		m["DeletedDate"] = epoch(*e.deletedAt)
	}
	return m
}

func matchFilters(e *entry, fs []listFilter) bool {
	for _, f := range fs {
		var fields []string
		switch f.Key {
		case "name":
			fields = []string{e.name}
		case "tag-key":
			for _, t := range e.tags {
				fields = append(fields, t.Key)
			}
		case "tag-value":
			for _, t := range e.tags {
				fields = append(fields, t.Value)
			}
		}
		ok := false
		for _, v := range f.Values {
			neg := strings.HasPrefix(v, "!")
			v = strings.TrimPrefix(v, "!")
			hit := false
			for _, x := range fields {
				if strings.HasPrefix(x, v) {
					hit = true
					break
				}
			}
			if hit != neg {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
