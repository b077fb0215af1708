package secretsmanager_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// TestRetireTakesPreviousOff: Retire removes AWSPREVIOUS from the version
// with one UpdateSecretVersionStage call; a version a later rotation left
// unlabelled needs no call at all.
func TestRetireTakesPreviousOff(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("retire")
	r1 := mustPut(t, p, name, "sk-1", "e1")
	r2 := mustPut(t, p, name, "sk-2", "e2")
	r3 := mustPut(t, p, name, "sk-3", "e3")
	f.ResetRequests()
	if err := p.Retire(ctxT(t), providers.RetireRequest{Name: name, Version: r1.Version, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if n := f.Calls("UpdateSecretVersionStage", ""); n != 0 {
		t.Errorf("retiring an unlabelled version made %d UpdateSecretVersionStage calls, want 0", n)
	}
	if err := p.Retire(ctxT(t), providers.RetireRequest{Name: name, Version: r2.Version, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if n := f.Calls("UpdateSecretVersionStage", ""); n != 1 {
		t.Errorf("retiring AWSPREVIOUS made %d UpdateSecretVersionStage calls, want 1", n)
	}
	if _, err := f.Client().GetSecretValue(ctxT(t), &sm.GetSecretValueInput{SecretId: aws.String(name), VersionStage: aws.String("AWSPREVIOUS")}); err == nil {
		t.Error("AWSPREVIOUS still resolves after Retire")
	}
	if v, id := stage(t, f, name, "AWSCURRENT"); v != "sk-3" || id != r3.Version {
		t.Errorf("AWSCURRENT = %q (%s), want sk-3", v, id)
	}
}

// TestRetireLabelMovedMeanwhile: when AWS refuses the label change because
// AWSPREVIOUS moved between the describe and the write, Retire reads the
// labels again instead of failing.
func TestRetireLabelMovedMeanwhile(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("retire-race")
	r1 := mustPut(t, p, name, "sk-1", "e1")
	mustPut(t, p, name, "sk-2", "e2")
	f.Inject(kumofront.Fault{Action: "UpdateSecretVersionStage", Code: "InvalidParameterException", Message: "The staging label AWSPREVIOUS is not attached to that version.", Times: 1})
	if err := p.Retire(ctxT(t), providers.RetireRequest{Name: name, Version: r1.Version, Owner: owner}); err != nil {
		t.Fatalf("Retire after a refused label change: %v", err)
	}
	if n := f.Calls("UpdateSecretVersionStage", ""); n != 2 {
		t.Errorf("%d UpdateSecretVersionStage calls, want 2 (refused, then done)", n)
	}
	d, err := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if st := d.VersionIdsToStages[r1.Version]; len(st) != 0 {
		t.Errorf("retired version still has stages %v", st)
	}
}

var _ providers.Retirer = (*secretsmanager.Provider)(nil)
