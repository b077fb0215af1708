package awsconfig_test

import (
	"context"
	"fmt"

	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"
)

// A provider builds its SDK config from its options map: LiteLLM's aws_*
// keys plus keyrelay's endpoint and ca_bundle. Credentials are fetched
// lazily, on the first call.
func ExampleLoad() {
	opts := map[string]string{
		"aws_region_name":  "eu-west-1",
		"aws_role_name":    "arn:aws:iam::111122223333:role/keyrelay",
		"aws_session_name": "keyrelay-worker",
		"endpoint":         "https://vpce-0abc.secretsmanager.eu-west-1.vpce.amazonaws.com",
	}
	noEnv := func(string) string { return "" }
	cfg, err := awsconfig.Load(context.Background(), opts, noEnv)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Region, *cfg.BaseEndpoint)
	// Output: eu-west-1 https://vpce-0abc.secretsmanager.eu-west-1.vpce.amazonaws.com
}
