package events

import (
	"strings"
)

// MaxMetadataEntries bounds metadata maps; provider tag limits are lower
// still (AWS allows 50 tags, Azure 15) and are enforced by each provider.
const MaxMetadataEntries = 32

func validateMetadata(field string, m map[string]string) error {
	if len(m) > MaxMetadataEntries {
		return invalid(field, "has %d entries, more than %d", len(m), MaxMetadataEntries)
	}
	for k, v := range m {
		if k == "" {
			return invalid(field, "has an empty key")
		}
		if err := validateText(field+" key", k, 128); err != nil {
			return err
		}
		if err := validateText(field+"."+clip(k), v, 256); err != nil {
			return err
		}
	}
	return nil
}

// Access modes, as LiteLLM names them.
const (
	AccessReadOnly     = "read_only"
	AccessWriteOnly    = "write_only"
	AccessReadAndWrite = "read_and_write"
)

// Validate checks team settings; field prefixes the field names in errors.
func (s *TeamSettings) Validate(field string) error {
	if s.Backend != "" {
		if err := validateText(field+".backend", s.Backend, 64); err != nil {
			return err
		}
	}
	switch s.AccessMode {
	case "", AccessReadOnly, AccessWriteOnly, AccessReadAndWrite:
	default:
		return invalid(field+".access_mode", "is not one of read_only, write_only, read_and_write")
	}
	if s.Prefix != nil {
		if err := validateText(field+".prefix", *s.Prefix, 128); err != nil {
			return err
		}
		if strings.Contains(*s.Prefix, "..") {
			return invalid(field+".prefix", `contains ".."`)
		}
	}
	if err := validateText(field+".name_template", s.NameTemplate, 256); err != nil {
		return err
	}
	if s.RetirePreviousAfter != "" {
		if _, _, err := ParseRetireAfter(s.RetirePreviousAfter); err != nil {
			return invalid(field+".retire_previous_after", "%s", err.Error())
		}
	}
	if err := validateText(field+".description", s.Description, 1024); err != nil {
		return err
	}
	if err := validateMetadata(field+".tags", s.Tags); err != nil {
		return err
	}
	return validateMetadata(field+".options", s.Options)
}
