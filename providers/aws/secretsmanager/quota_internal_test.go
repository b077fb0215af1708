package secretsmanager

import "testing"

func TestQuotaName(t *testing.T) {
	for name, tc := range map[string]struct {
		key  limiterKey
		b    bucket
		want string
	}{
		"role account": {limiterKey{region: "us-east-1", account: "123456789012", endpoint: "https://vpce.example"}, bucketWrite,
			"aws_secret_manager/123456789012/us-east-1/write"},
		"endpoint": {limiterKey{region: "eu-west-1", endpoint: "HTTP://LocalHost:4566/"}, bucketRead,
			"aws_secret_manager/localhost:4566/eu-west-1/read"},
		"default": {limiterKey{region: "ap-south-1"}, bucketTag, "aws_secret_manager/default/ap-south-1/tag"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tc.key.quotaName(tc.b); got != tc.want {
				t.Errorf("quotaName %q, want %q", got, tc.want)
			}
		})
	}
	k := limiterKey{read: 1, write: 2, control: 3}
	for b, want := range map[bucket]float64{bucketRead: 1, bucketWrite: 2, bucketCreate: 3, bucketList: 3} {
		if got := k.perSecond(b); got != want {
			t.Errorf("perSecond(%s) %v, want %v", b, got, want)
		}
	}
}
