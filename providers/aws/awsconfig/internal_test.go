package awsconfig

import "testing"

func TestUsesIRSARole(t *testing.T) {
	role := "arn:aws:iam::1:role/r"
	tests := map[string]struct {
		env  map[string]string
		opts map[string]string
		want bool
	}{
		"same role":     {map[string]string{EnvIRSARoleARN: role, EnvIRSATokenFile: "/var/run/token"}, map[string]string{OptionAWSRoleName: role}, true},
		"other role":    {map[string]string{EnvIRSARoleARN: "arn:aws:iam::1:role/other", EnvIRSATokenFile: "/t"}, map[string]string{OptionAWSRoleName: role}, false},
		"no token file": {map[string]string{EnvIRSARoleARN: role}, map[string]string{OptionAWSRoleName: role}, false},
		"explicit web identity token": {map[string]string{EnvIRSARoleARN: role, EnvIRSATokenFile: "/t"},
			map[string]string{OptionAWSRoleName: role, OptionAWSWebIdentityToken: "jwt"}, false},
		"no role": {map[string]string{EnvIRSARoleARN: role, EnvIRSATokenFile: "/t"}, nil, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := FromOptions(tc.opts, func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if got := s.usesIRSARole(); got != tc.want {
				t.Errorf("usesIRSARole = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSTSRegion(t *testing.T) {
	tests := map[string]string{
		"https://sts.eu-west-1.amazonaws.com":                 "eu-west-1",
		"https://sts-fips.us-gov-west-1.amazonaws.com":        "us-gov-west-1",
		"https://vpce-0abc.sts.ap-south-1.vpce.amazonaws.com": "ap-south-1",
		"https://sts.cn-north-1.amazonaws.com.cn":             "cn-north-1",
		"https://sts.amazonaws.com":                           "",
		"http://127.0.0.1:4566":                               "",
		"https://sts.eu-west-1.amazonaws.com.evil.example":    "",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := stsRegion(in); got != want {
				t.Errorf("stsRegion(%q) = %q, want %q", in, got, want)
			}
		})
	}
}

func TestAccount(t *testing.T) {
	for role, want := range map[string]string{"arn:aws:iam::111122223333:role/x": "111122223333", "": "", "arn:bad": ""} {
		if got := (Settings{RoleARN: role}).Account(); got != want {
			t.Errorf("Account(%q) = %q, want %q", role, got, want)
		}
	}
}
