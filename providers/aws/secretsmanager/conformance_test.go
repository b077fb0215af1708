package secretsmanager_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

// open builds a provider on front through Factory, as the registry does.
func open(t testing.TB, front *kumofront.Server, extra map[string]string) *secretsmanager.Provider {
	t.Helper()
	opts := front.Options()
	for k, v := range extra {
		opts[k] = v
	}
	p, err := secretsmanager.Factory(context.Background(), providers.Config{Options: opts, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(providers.Closer).Close() })
	return p.(*secretsmanager.Provider)
}

func TestConformance(t *testing.T) {
	front := kumofront.Start(t)
	// Small ListSecrets pages, so that the List case pages.
	listOpts := map[string]string{secretsmanager.OptionListPageSize: "2"}
	providertest.Run(t, func(t *testing.T) providers.Provider { return open(t, front, listOpts) }, providertest.Options{
		Features: providertest.Features{
			ListPageSize: 2,
			BinaryValues: true,
			// Names AWS cannot hold are mapped (SecretID); 1024 is the
			// longest keyrelay renders.
			MaxNameLength: secretsmanager.MaxNameLength,
			// The front, like AWS, serializes writes to a secret, and Put
			// resolves create races itself.
			SerializedWrites: true,
			// Retire takes AWSPREVIOUS off the version; AWS deletes
			// unlabelled versions itself, later.
			RetireKeepsValue: true,
		},
		Retired: func(ctx context.Context, _ providers.Provider, name, version string) (bool, error) {
			return retiredOnAWS(ctx, front, name, version)
		},
		CreateUnmanaged: func(ctx context.Context, _ providers.Provider, name string, value []byte) error {
			_, err := front.Client().CreateSecret(ctx, &sm.CreateSecretInput{
				Name: aws.String(secretsmanager.SecretID(name)), SecretString: aws.String(string(value))})
			return err
		},
	})
}

// retiredOnAWS reports, as any AWS tool sees it, whether version of name
// holds neither AWSCURRENT nor AWSPREVIOUS.
func retiredOnAWS(ctx context.Context, front *kumofront.Server, name, version string) (bool, error) {
	d, err := front.Client().DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(secretsmanager.SecretID(name))})
	if err != nil {
		return false, err
	}
	for _, st := range d.VersionIdsToStages[version] {
		if st == secretsmanager.StageCurrent || st == secretsmanager.StagePrevious {
			return false, nil
		}
	}
	return true, nil
}
