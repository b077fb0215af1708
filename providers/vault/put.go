package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/providers"
)

// DataEventKey is the field of a version's KV data, next to the value,
// holding the event id (PutRequest.IdempotencyKey) that wrote the version,
// "-" for a write without one. It travels in the same request as the
// value, so no version keyrelay writes is ever without it, and recording
// it costs nothing. LiteLLM reads only the value's field (Config.DataKey).
// Versions written before this field existed have their event id in
// custom_metadata (EventKeyPrefix); both are read.
const DataEventKey = providers.EventTag

// DataFirstCopyKey marks a version that is a copy of a first version no
// owner was recorded for (a keyrelay create stopped between its two
// requests), written back by undoForeignWrite after a check-and-set write
// landed on it. The copy stands for that first version: its create's
// redelivery adopts it, and other writers wait for that (orphanOf,
// creating), as they would with version 1 itself.
const DataFirstCopyKey = "keyrelay-first-version-copy"

// versionData is the KV data of a new version: the value and its event id.
func (p *Provider) versionData(value []byte, eventID string) map[string]any {
	if eventID == "" {
		eventID = noEventID
	}
	return map[string]any{p.cfg.DataKey: string(value), DataEventKey: eventID}
}

// versionEvent returns the event id that wrote a version, from its data or
// else (versions written before DataEventKey) from custom_metadata, and
// whether one was recorded at all ("" with true for a write without one).
func versionEvent(data map[string]any, custom map[string]string, version uint64) (string, bool) {
	if id, ok := data[DataEventKey].(string); ok {
		if id == noEventID {
			return "", true
		}
		return id, true
	}
	return eventOf(custom, version)
}

// current is what the checked Put needs to know about a secret before
// writing.
type current struct {
	exists   bool   // metadata exists
	version  uint64 // current version, 0 when none was ever written
	live     bool   // the current version is readable
	meta     versionMeta
	custom   map[string]string
	value    string
	hasVal   bool
	event    string // the current version's event id (when recorded)
	recorded bool   // the current version's event id is known
	// firstCopy: the current version is undoForeignWrite's copy of an
	// ownerless first version (DataFirstCopyKey).
	firstCopy bool
}

// first reports whether the current version is the secret's first
// version, or stands for it (firstCopy).
func (c *current) first() bool { return c.version == 1 || c.firstCopy }

// readCurrent reads what Put must know about the secret: one GET of data/,
// which carries custom_metadata too, and a GET of metadata/ only when
// there is no current version.
func (p *Provider) readCurrent(ctx context.Context, op, name string, ps paths) (*current, error) {
	sec, status, err := p.read(ctx, op, name, ps.data(), nil)
	if err != nil {
		return nil, err
	}
	if status == 404 && sec == nil {
		sec, status, err = p.read(ctx, op, name, ps.metadata(), nil)
		if err != nil {
			return nil, err
		}
		if status == 404 {
			return &current{}, nil
		}
		m, err := parseMetadata(sec)
		if err != nil {
			return nil, newErr(op, name, providers.Retryable, fmt.Errorf("%w: %w", providers.ErrUnavailable, err))
		}
		// A version may have been written between the two reads: then it
		// is current (its value and event unknown here, unless recorded in
		// custom_metadata).
		c := &current{exists: true, version: m.current, custom: m.custom, live: !m.latestGone()}
		c.meta = m.versions[m.current]
		c.event, c.recorded = eventOf(m.custom, m.current)
		return c, nil
	}
	d, err := parseData(sec)
	if err != nil {
		return nil, p.dataErr(op, name, err)
	}
	c := &current{exists: true, version: d.version, meta: d.meta, custom: d.custom, live: status != 404 && !d.meta.gone()}
	if c.live {
		s, ok := d.data[p.cfg.DataKey].(string)
		c.value, c.hasVal = s, ok
		c.event, c.recorded = versionEvent(d.data, d.custom, d.version)
		_, c.firstCopy = d.data[DataFirstCopyKey]
	}
	return c, nil
}

func (p *Provider) dataErr(op, name string, err error) error {
	if errors.Is(err, errMalformed) {
		// A KV v1 mount, or something else answering: not going to change.
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	return err
}

// owned applies the ownership guard to an existing secret.
func owned(c *current, o providers.Owner, adopt bool) bool {
	if adopt || providers.IsOwnedBy(c.custom, o) {
		return true
	}
	// Metadata with no version ever written and no owner: pre-provisioned
	// by an operator (max_versions, custom_metadata), not a secret.
	return c.version == 0 && c.custom[providers.ManagedByTag] == ""
}

// Put implements providers.Provider.
//
// Every version is written as {"<data>": value, "keyrelay-event": event id}
// with check-and-set, so a concurrent writer makes it fail with a retryable
// ErrConflict and nothing is overwritten blindly.
//
// With req.ExpectedVersion (the version the caller last wrote to this
// secret) it writes at once with cas = that version: one request. The
// check-and-set succeeding proves nobody wrote a version since the caller's
// own, so there is nothing newer to lose and no other event's version to
// find; the custom_metadata Vault returns with the write (read under the
// same lock) confirms the owner, and a write that finds the secret no
// longer the caller's is taken back (undoForeignWrite) and fails with
// ErrNotOwned. Tags or a description that changed cost one patch more.
//
// On a check-and-set conflict, or without a hint (or one that is not a
// version number), it takes the checked path (putChecked): it reads the
// current version, refuses a secret it does not own (unless Adopt), returns
// the current version as a Duplicate when it was written by
// req.IdempotencyKey, and otherwise writes on top of it. A redelivered
// event whose first write landed (the caller's hint is then one version
// behind) thus costs the failed write and one read, and writes nothing.
//
// Without a hint it first tries to create the secret (putNew): the first
// version with cas = 0, which Vault refuses when the secret has a version,
// then the owner's custom_metadata: two requests. A crash in between
// leaves a first version without an owner, carrying this event's id and
// value; the redelivery adopts exactly that (orphanOf) and nothing else.
// A Put on a deleted or destroyed secret restores it: a new version on
// top, Created set, and the version the soft delete hid is undeleted.
//
// Values must be valid UTF-8 (KV data is JSON). Nil Tags keep the stored
// extra tags; an empty Description keeps the stored one.
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	name := req.Name
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return providers.PutResult{}, err
	}
	if !utf8.Valid(req.Value) {
		return providers.PutResult{}, errInvalid(op, name, "value is not valid UTF-8 (Vault KV stores JSON strings)")
	}
	if !printable(req.IdempotencyKey) || len(req.IdempotencyKey) > maxMetadataValueLen {
		return providers.PutResult{}, errInvalid(op, name, "idempotency key must be printable and at most %d bytes", maxMetadataValueLen)
	}
	// The tags are checked before any write, the fast path's included.
	if _, err := p.cfg.desiredTags(nil, tagUpdate{owner: req.Owner, extra: req.Tags, adopt: req.Adopt, description: req.Description}); err != nil {
		return providers.PutResult{}, errInvalid(op, name, "%v", err)
	}
	if err := p.checkMount(ctx, op, name); err != nil {
		return providers.PutResult{}, err
	}
	hint, hinted := expectedVersion(req.ExpectedVersion)
	var done bool
	var res providers.PutResult
	if hinted {
		res, done, err = p.putExpected(ctx, op, req, ps, hint)
	} else {
		// Without a hint the secret is most likely new.
		res, done, err = p.putNew(ctx, op, req, ps)
	}
	if done {
		return res, err
	}
	return p.putChecked(ctx, op, req, ps)
}

// expectedVersion parses PutRequest.ExpectedVersion; a hint that is not a
// KV version number (another provider's, say) is no hint.
func expectedVersion(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

// putExpected is the fast path: one check-and-set write at the caller's
// expected version. done is false on a check-and-set conflict: the caller
// then takes the checked path.
func (p *Provider) putExpected(ctx context.Context, op string, req providers.PutRequest, ps paths, expected uint64) (res providers.PutResult, done bool, err error) {
	name := req.Name
	ver, custom, conflict, err := p.writeVersion(ctx, op, req, ps, expected)
	if conflict {
		// A version was written since the hint: someone else's, or this
		// very event's (a redelivery after a crash before the caller
		// recorded it). The checked path tells which.
		return providers.PutResult{}, false, nil
	}
	if err != nil {
		// Not written, or written but not confirmed: a retry's
		// check-and-set fails and the checked path finds this event's
		// version (a Duplicate).
		return providers.PutResult{}, true, err
	}
	if !req.Adopt && !providers.IsOwnedBy(custom, req.Owner) {
		if custom[providers.ManagedByTag] == "" && p.predecessorAt(ctx, op, name, ps, expected, req.Replaces) {
			// The version written on top of is the key's own previous
			// value, from a create (a restore's) that stopped before it
			// recorded its owner: the secret is the caller's.
			want, err := p.cfg.desiredTags(custom, tagUpdate{owner: req.Owner, extra: req.Tags, keepExtra: req.Tags == nil, description: req.Description})
			if err != nil {
				return providers.PutResult{}, true, errInvalid(op, name, "%v", err)
			}
			if err := p.ownNew(ctx, op, name, ps, custom, want); err != nil {
				return providers.PutResult{}, true, err
			}
			return providers.PutResult{Version: strconv.FormatUint(ver, 10)}, true, nil
		}
		if p.undoForeignWrite(ctx, op, name, ps, expected, ver) {
			// The hint (a ledger's version of an earlier life of the
			// secret, before a backend loss) matched a keyrelay create's
			// first version whose owner is not recorded yet: wait for
			// that create, as the checked path does (creating).
			return providers.PutResult{}, true, newErr(op, name, providers.Retryable,
				fmt.Errorf("%w: a keyrelay create of this secret has not recorded its owner yet", providers.ErrConflict))
		}
		return providers.PutResult{}, true, errNotOwned(op, name)
	}
	want, err := p.cfg.desiredTags(custom, tagUpdate{owner: req.Owner, extra: req.Tags, keepExtra: req.Tags == nil, adopt: req.Adopt, description: req.Description})
	if err != nil {
		return providers.PutResult{}, true, errInvalid(op, name, "%v", err)
	}
	// Usually empty: the worker sends the same tags with every rotation.
	if err := p.sendPatch(ctx, op, name, ps, p.cfg.metadataPatch(custom, want, 0, "")); err != nil {
		return providers.PutResult{}, true, err
	}
	return providers.PutResult{Version: strconv.FormatUint(ver, 10)}, true, nil
}

// writeVersion writes req's value and event id as a new version with
// check-and-set at cas, and returns the version made and the secret's
// custom_metadata as it stood when the version was added. conflict is
// true (and nothing written) when the secret's current version is not
// cas.
func (p *Provider) writeVersion(ctx context.Context, op string, req providers.PutRequest, ps paths, cas uint64) (ver uint64, custom map[string]string, conflict bool, err error) {
	sec, status, err := p.write(ctx, op, req.Name, ps.data(), map[string]any{
		"options": map[string]any{"cas": cas},
		"data":    p.versionData(req.Value, req.IdempotencyKey),
	})
	if errors.Is(err, providers.ErrConflict) {
		return 0, nil, true, err
	}
	if err != nil {
		return 0, nil, false, err
	}
	if ver, err = p.writtenVersion(op, req.Name, sec, status); err != nil {
		return 0, nil, false, err
	}
	custom, err = p.writtenCustom(ctx, op, req.Name, ps, sec)
	return ver, custom, false, err
}

// writtenCustom returns the custom_metadata Vault answered the write with
// (KV v2 returns the secret's custom_metadata as it stood when the version
// was added, under the secret's lock). A server that does not return it
// costs a metadata read.
func (p *Provider) writtenCustom(ctx context.Context, op, name string, ps paths, sec *api.Secret) (map[string]string, error) {
	if raw, ok := sec.Data["custom_metadata"]; ok {
		return toStringMap(raw), nil
	}
	m, err := p.readMetadata(ctx, op, name, ps)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, newErr(op, name, providers.Retryable, fmt.Errorf("%w: the secret was deleted concurrently", providers.ErrConflict))
	}
	return m.custom, nil
}

// putNew creates the secret: its first version with cas = 0 (Vault
// refuses it when the secret has a version, whoever wrote it), then the
// owner's custom_metadata. done is false when the secret already has a
// version: the caller takes the checked path, which reads it.
//
// Nothing is read first, so no one can create the secret between a read
// and this write and have their custom_metadata replaced by ours. Metadata
// already there without a version is kept: an operator's pre-provisioned
// custom_metadata and max_versions, or an owner recorded by a create of
// the former format (metadata first) that stopped before its version.
// When that owner is another key, the version just written is destroyed
// and the Put fails with ErrNotOwned (unless Adopt).
func (p *Provider) putNew(ctx context.Context, op string, req providers.PutRequest, ps paths) (res providers.PutResult, done bool, err error) {
	name := req.Name
	ver, custom, conflict, err := p.writeVersion(ctx, op, req, ps, 0)
	if conflict {
		return providers.PutResult{}, false, nil
	}
	if err != nil {
		// Not written, or written without its owner: the retry finds this
		// event's own first version and records the owner then (orphanOf).
		return providers.PutResult{}, true, err
	}
	if custom[providers.ManagedByTag] != "" && !req.Adopt && !providers.IsOwnedBy(custom, req.Owner) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
		defer cancel()
		p.log.Warn("created a version in a secret whose metadata names another owner; destroying it", zap.String("name", name), zap.Uint64("version", ver))
		if _, _, err := p.write(ctx, op, name, ps.destroy(), map[string]any{"versions": []uint64{ver}}); err != nil {
			p.log.Error("could not destroy the version written into a secret keyrelay does not own", zap.String("name", name), zap.Error(err))
		}
		return providers.PutResult{}, true, errNotOwned(op, name)
	}
	want, err := p.cfg.desiredTags(custom, tagUpdate{owner: req.Owner, extra: req.Tags, keepExtra: req.Tags == nil, adopt: req.Adopt, description: req.Description})
	if err != nil {
		return providers.PutResult{}, true, errInvalid(op, name, "%v", err)
	}
	if err := p.ownNew(ctx, op, name, ps, custom, want); err != nil {
		return providers.PutResult{}, true, err
	}
	return providers.PutResult{Version: strconv.FormatUint(ver, 10), Created: true}, true, nil
}

// ownNew records the owner (and the tags of want) on a secret keyrelay
// just created, and Config.MaxVersions when its metadata was empty (an
// operator's pre-provisioned metadata keeps its own max_versions).
func (p *Provider) ownNew(ctx context.Context, op, name string, ps paths, custom, want map[string]string) error {
	body := map[string]any{}
	if patch := p.cfg.metadataPatch(custom, want, 0, ""); len(patch) > 0 {
		body["custom_metadata"] = patch
	}
	if len(custom) == 0 && p.cfg.MaxVersions > 0 {
		body["max_versions"] = p.cfg.MaxVersions
	}
	if len(body) == 0 {
		return nil
	}
	status, err := p.patch(ctx, op, name, ps.metadata(), body)
	if err != nil {
		return err
	}
	if status == 404 {
		return newErr(op, name, providers.Retryable, fmt.Errorf("%w: the secret was deleted concurrently", providers.ErrConflict))
	}
	return nil
}

// creating reports whether the secret is a keyrelay create between its
// first version and its owner's metadata (putNew): a first version with
// an event id in its data and no owner at all.
func creating(c *current) bool {
	return c.live && c.first() && c.custom[providers.ManagedByTag] == "" && c.recorded && c.event != ""
}

// orphanOf reports whether the secret is req's own creation whose Put
// stopped between its first version and recording the owner (putNew): a
// first version, no owner at all, written by this very event (its id in
// the data) with this very value.
func orphanOf(c *current, req providers.PutRequest) bool {
	return c.live && c.first() && c.custom[providers.ManagedByTag] == "" &&
		req.IdempotencyKey != "" && c.recorded && c.event == req.IdempotencyKey &&
		c.hasVal && c.value == string(req.Value)
}

// predecessorAt reports whether version v of the secret is the first
// version (or undoForeignWrite's copy standing for it) written by event
// replaces: the caller's key's own previous value (PutRequest.Replaces).
// A failed read reports false: the caller then takes its write back, as
// for any secret it does not own.
func (p *Provider) predecessorAt(ctx context.Context, op, name string, ps paths, v uint64, replaces string) bool {
	if replaces == "" {
		return false
	}
	sec, status, err := p.read(ctx, op, name, ps.data(), url.Values{"version": []string{strconv.FormatUint(v, 10)}})
	if err != nil || status == 404 {
		return false
	}
	d, err := parseData(sec)
	if err != nil || d.data == nil || d.meta.gone() {
		return false
	}
	_, copied := d.data[DataFirstCopyKey]
	ev, _ := versionEvent(d.data, nil, d.version)
	return (v == 1 || copied) && ev == replaces
}

// undoForeignWrite takes back a version the fast path wrote into a secret
// that turned out not to be the caller's: its owner changed without a new
// version (an adopting UpdateTags by another key, a hand edit of
// custom_metadata) or the hint came from another Vault location under the
// same backend name. The previous version's data is written back on top,
// so the owner's value is current again, then the caller's version is
// destroyed, so its value is not left in someone else's secret. Best
// effort, bounded by the request timeout even when ctx has ended; failures
// are logged (names and versions only).
//
// It reports whether the previous version was a keyrelay create's first
// version with no owner recorded (creating): its copy is then marked
// (DataFirstCopyKey) so that it still stands for that first version.
func (p *Provider) undoForeignWrite(ctx context.Context, op, name string, ps paths, prev, ours uint64) (firstOfCreate bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
	defer cancel()
	log := p.log.With(zap.String("name", name), zap.Uint64("version", ours))
	log.Warn("check-and-set hint matched a secret keyrelay does not own; taking the write back")
	sec, status, err := p.read(ctx, op, name, ps.data(), url.Values{"version": []string{strconv.FormatUint(prev, 10)}})
	if err == nil && status != 404 {
		var d *dataResponse
		if d, err = parseData(sec); err == nil && d.data != nil && !d.meta.gone() {
			data := d.data
			_, copied := data[DataFirstCopyKey]
			if ev, _ := versionEvent(data, d.custom, d.version); (prev == 1 || copied) && ev != "" && d.custom[providers.ManagedByTag] == "" {
				firstOfCreate = true
				data = maps.Clone(data)
				data[DataFirstCopyKey] = "1"
			}
			_, _, err = p.write(ctx, op, name, ps.data(), map[string]any{"options": map[string]any{"cas": ours}, "data": data})
		}
	}
	if err != nil {
		log.Error("could not write the owner's previous version back", zap.Uint64("previous", prev), zap.Error(err))
	}
	if _, _, err := p.write(ctx, op, name, ps.destroy(), map[string]any{"versions": []uint64{ours}}); err != nil {
		log.Error("could not destroy the version written over a secret keyrelay does not own", zap.Error(err))
	}
	return firstOfCreate
}

// putChecked is the guarded path: read, ownership guard, idempotency
// check, then a check-and-set write on top of what was read.
func (p *Provider) putChecked(ctx context.Context, op string, req providers.PutRequest, ps paths) (providers.PutResult, error) {
	name := req.Name
	cur, err := p.readCurrent(ctx, op, name, ps)
	if err != nil {
		return providers.PutResult{}, err
	}
	if !cur.exists {
		// Gone since the write that sent us here (or a hint from
		// elsewhere): create it.
		res, done, err := p.putNew(ctx, op, req, ps)
		if !done {
			return providers.PutResult{}, newErr(op, name, providers.Retryable, fmt.Errorf("%w: the secret was created concurrently", providers.ErrConflict))
		}
		return res, err
	}
	orphan := orphanOf(cur, req)
	// pred: the key's own previous value, from a create that stopped
	// before it recorded its owner (req.Replaces).
	pred := !orphan && !req.Adopt && creating(cur) && req.Replaces != "" && cur.event == req.Replaces
	if !orphan && !pred && !owned(cur, req.Owner, req.Adopt) {
		if creating(cur) {
			// Another keyrelay Put created it and has not recorded its
			// owner yet (or stopped before: its redelivery will).
			return providers.PutResult{}, newErr(op, name, providers.Retryable,
				fmt.Errorf("%w: a keyrelay create of this secret has not recorded its owner yet", providers.ErrConflict))
		}
		return providers.PutResult{}, errNotOwned(op, name)
	}
	upd := tagUpdate{owner: req.Owner, extra: req.Tags, keepExtra: req.Tags == nil, adopt: req.Adopt, description: req.Description}
	want, err := p.cfg.desiredTags(cur.custom, upd)
	if err != nil {
		return providers.PutResult{}, errInvalid(op, name, "%v", err)
	}
	if orphan || pred {
		// This event's own first version, or the key's previous one,
		// whose Put stopped before it recorded the owner: record it now.
		if err := p.ownNew(ctx, op, name, ps, cur.custom, want); err != nil {
			return providers.PutResult{}, err
		}
		cur.custom = want
	}
	if res, dup, err := p.duplicate(ctx, op, req, ps, cur, want); dup || err != nil {
		return res, err
	}
	switch {
	case !ownerIs(cur.custom, want):
		// Adopting, or an operator's pre-provisioned metadata: take
		// ownership before writing, so a crash leaves the secret owned.
		if err := p.takeOwnership(ctx, op, name, ps, cur.custom, want); err != nil {
			return providers.PutResult{}, err
		}
		cur.custom = mergeOwnership(cur.custom, want)
	}
	sec, status, err := p.write(ctx, op, name, ps.data(), map[string]any{
		"options": map[string]any{"cas": cur.version},
		"data":    p.versionData(req.Value, req.IdempotencyKey),
	})
	if err != nil {
		return providers.PutResult{}, err
	}
	ver, err := p.writtenVersion(op, name, sec, status)
	if err != nil {
		return providers.PutResult{}, err
	}
	if err := p.sendPatch(ctx, op, name, ps, p.cfg.metadataPatch(cur.custom, want, 0, "")); err != nil {
		return providers.PutResult{}, err
	}
	if cur.exists && cur.version > 0 && cur.meta.deleted && !cur.meta.destroyed {
		// Restore the version the soft delete hid, so it reads again.
		if _, _, err := p.write(ctx, op, name, ps.undelete(), map[string]any{"versions": []uint64{cur.version}}); err != nil {
			p.log.Warn("restored secret, but undeleting its previous version failed", zap.String("name", name), zap.Uint64("version", cur.version), zap.Error(err))
		}
	}
	return providers.PutResult{Version: strconv.FormatUint(ver, 10), Created: !cur.live}, nil
}

// duplicate reports whether the current version was written by this very
// event (req.IdempotencyKey): recorded with the version, or, for a version
// written before versions carried their event id and whose record in
// custom_metadata was lost (a crash between the write and the record),
// owned by the same key and holding the same value; that record is made
// now.
func (p *Provider) duplicate(ctx context.Context, op string, req providers.PutRequest, ps paths, cur *current, want map[string]string) (providers.PutResult, bool, error) {
	if !cur.live || req.IdempotencyKey == "" {
		return providers.PutResult{}, false, nil
	}
	res := providers.PutResult{Version: strconv.FormatUint(cur.version, 10), Duplicate: true}
	switch {
	case cur.recorded && cur.event == req.IdempotencyKey:
		return res, true, nil
	case !cur.recorded && cur.hasVal && cur.value == string(req.Value) && providers.IsOwnedBy(cur.custom, req.Owner):
		if err := p.patchMetadata(ctx, op, req.Name, ps, cur.custom, want, cur.version, req.IdempotencyKey); err != nil {
			return providers.PutResult{}, false, err
		}
		return res, true, nil
	}
	return providers.PutResult{}, false, nil
}

// writtenVersion checks a data write's answer and returns the version it
// made.
func (p *Provider) writtenVersion(op, name string, sec *api.Secret, status int) (uint64, error) {
	if status == 404 {
		return 0, newErr(op, name, providers.Permanent, fmt.Errorf("%w: HTTP 404 writing %s (is %q a KV v2 mount?)", providers.ErrNotFound, "data", p.cfg.Mount))
	}
	if sec == nil || sec.Data == nil {
		return 0, p.notKV2(op, name, fmt.Errorf("%w: no version in the write response", errMalformed))
	}
	v, err := toUint(sec.Data["version"])
	if err != nil || v == 0 {
		return 0, p.notKV2(op, name, fmt.Errorf("%w: version in the write response", errMalformed))
	}
	return v, nil
}

// notKV2 is the error for an answer that is not KV v2's: a misconfigured
// mount will not heal.
func (p *Provider) notKV2(op, name string, err error) error {
	return newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w (is %q a KV v2 mount?)", providers.ErrInvalid, err, p.cfg.Mount))
}

func ownership(want map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range ownerTagNames {
		if v, ok := want[k]; ok {
			out[k] = v
		}
	}
	return out
}

// ownerTagNames are the custom_metadata keys that say who owns a secret.
var ownerTagNames = []string{providers.ManagedByTag, providers.TeamTag, providers.KeyTag}

// ownerIs reports whether custom already carries want's ownership tags.
func ownerIs(custom, want map[string]string) bool {
	for _, k := range ownerTagNames {
		if custom[k] != want[k] {
			return false
		}
	}
	return true
}

func mergeOwnership(custom, want map[string]string) map[string]string {
	out := maps.Clone(custom)
	if out == nil {
		out = map[string]string{}
	}
	delete(out, providers.TeamTag)
	delete(out, providers.KeyTag)
	maps.Copy(out, ownership(want))
	return out
}

// takeOwnership sets the ownership tags of want on an existing secret,
// leaving its other custom_metadata alone.
func (p *Provider) takeOwnership(ctx context.Context, op, name string, ps paths, old, want map[string]string) error {
	patch := map[string]any{}
	for _, k := range ownerTagNames {
		if v, ok := want[k]; ok {
			patch[k] = v
		} else if _, had := old[k]; had {
			patch[k] = nil
		}
	}
	return p.sendPatch(ctx, op, name, ps, patch)
}

// patchMetadata changes custom_metadata from old to want and records
// eventID as the event of version in custom_metadata (the record of
// versions written before DataEventKey).
func (p *Provider) patchMetadata(ctx context.Context, op, name string, ps paths, old, want map[string]string, version uint64, eventID string) error {
	return p.sendPatch(ctx, op, name, ps, p.cfg.metadataPatch(old, want, version, eventID))
}

func (p *Provider) sendPatch(ctx context.Context, op, name string, ps paths, patch map[string]any) error {
	if len(patch) == 0 {
		return nil
	}
	status, err := p.patch(ctx, op, name, ps.metadata(), map[string]any{"custom_metadata": patch})
	if err != nil {
		return err
	}
	if status == 404 {
		// Deleted (metadata and all) between our write and this patch.
		return newErr(op, name, providers.Retryable, fmt.Errorf("%w: the secret was deleted concurrently", providers.ErrConflict))
	}
	return nil
}
