package kumofront_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

func TestListSecrets(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	base := name(t, "")
	var all []string
	for i := 0; i < 7; i++ {
		n := fmt.Sprintf("%sa/%02d", base, i)
		tags := []types.Tag{{Key: aws.String("owner"), Value: aws.String("team-a")}}
		if i%2 == 1 {
			tags = []types.Tag{{Key: aws.String("owner"), Value: aws.String("team-b")}}
		}
		if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v"), Tags: tags}); err != nil {
			t.Fatal(err)
		}
		all = append(all, n)
	}
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(base + "untagged"), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecret(ctx, &sm.DeleteSecretInput{SecretId: aws.String(all[6])}); err != nil {
		t.Fatal(err)
	}
	list := func(in *sm.ListSecretsInput) (names []string, pages int) {
		t.Helper()
		p := sm.NewListSecretsPaginator(c, in)
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("ListSecrets: %v", err)
			}
			if in.MaxResults != nil && len(out.SecretList) > int(*in.MaxResults) {
				t.Errorf("page of %d, MaxResults %d", len(out.SecretList), *in.MaxResults)
			}
			pages++
			for _, s := range out.SecretList {
				names = append(names, aws.ToString(s.Name))
			}
		}
		return names, pages
	}
	byName := types.Filter{Key: types.FilterNameStringTypeName, Values: []string{base + "a/"}}
	tests := map[string]struct {
		in        *sm.ListSecretsInput
		want      []string
		wantPages int
	}{
		"pages of 2":       {&sm.ListSecretsInput{MaxResults: aws.Int32(2), Filters: []types.Filter{byName}}, all[:6], 3},
		"planned deletion": {&sm.ListSecretsInput{IncludePlannedDeletion: aws.Bool(true), Filters: []types.Filter{byName}}, all, 1},
		"tag key and value": {&sm.ListSecretsInput{Filters: []types.Filter{byName,
			{Key: types.FilterNameStringTypeTagKey, Values: []string{"own"}},
			{Key: types.FilterNameStringTypeTagValue, Values: []string{"team-a"}}}}, []string{all[0], all[2], all[4]}, 1},
		"negated value": {&sm.ListSecretsInput{Filters: []types.Filter{byName,
			{Key: types.FilterNameStringTypeTagValue, Values: []string{"!team-a"}}}}, []string{all[1], all[3], all[5]}, 1},
		"no tags": {&sm.ListSecretsInput{Filters: []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{base + "un"}}}}, []string{base + "untagged"}, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, pages := list(tc.in)
			if !slices.Equal(got, tc.want) {
				t.Errorf("names %q, want %q", got, tc.want)
			}
			if pages != tc.wantPages {
				t.Errorf("%d pages, want %d", pages, tc.wantPages)
			}
		})
	}
	t.Run("limits", func(t *testing.T) {
		for _, in := range []*sm.ListSecretsInput{
			{MaxResults: aws.Int32(101)},
			{NextToken: aws.String("not base64 !")},
			{Filters: []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{"bad#char"}}}},
		} {
			if _, err := c.ListSecrets(ctx, in); code(err) == "" {
				t.Errorf("ListSecrets %+v: %v, want an API error", in, err)
			}
		}
	})
}
