package secretsmanager_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// AWS refuses to delete a primary secret that still has replicas
// (InvalidParameterException "You can't delete secret ... that still has
// replica regions [...]"): with replica_regions set, Delete must remove
// the replicas first, or every key delete of such a team dead-letters and
// the revoked key stays readable in every Region.
func TestDeleteReplicatedSecret(t *testing.T) {
	for _, force := range []bool{false, true} {
		f := kumofront.Start(t)
		p := open(t, f, map[string]string{"replica_regions": "eu-west-1,us-west-2"})
		name := uniq("replicated")
		mustPut(t, p, name, "v", "e1")
		d, err := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
		if err != nil || len(d.ReplicationStatus) != 2 {
			t.Fatalf("describe after Put: %+v %v, want two replicas", d, err)
		}
		if err := p.Delete(ctxT(t), providers.DeleteRequest{Name: name, Owner: owner, Force: force}); err != nil {
			t.Fatalf("Delete (force=%v) of a replicated secret: %v", force, err)
		}
		d, err = f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
		var nf *types.ResourceNotFoundException
		switch {
		case force && !errors.As(err, &nf):
			t.Errorf("after a forced delete: %v, want ResourceNotFoundException", err)
		case !force && (err != nil || d.DeletedDate == nil):
			t.Errorf("after a delete: %+v %v, want scheduled for deletion", d, err)
		}
		if _, err := p.Get(ctxT(t), name, ""); !errors.Is(err, providers.ErrNotFound) {
			t.Errorf("Get after Delete (force=%v): %v, want ErrNotFound", force, err)
		}
	}
}

// Delete removes the replicas before it schedules the deletion, so a Put
// that restores the secret (Created) must replicate it again, as it does
// a secret it creates: otherwise the key lives in one Region only.
func TestRestoredSecretIsReplicatedAgain(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, map[string]string{"replica_regions": "eu-west-1,us-west-2"})
	name := uniq("replicated-restore")
	mustPut(t, p, name, "v1", "e1")
	if err := p.Delete(ctxT(t), providers.DeleteRequest{Name: name, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if res := mustPut(t, p, name, "v2", "e2"); !res.Created {
		t.Fatalf("Put after Delete: %+v, want Created (restored)", res)
	}
	d, err := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil || len(d.ReplicationStatus) != 2 {
		t.Fatalf("describe after the restoring Put: %+v %v, want two replicas", d.ReplicationStatus, err)
	}
}
