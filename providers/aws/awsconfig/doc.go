// Package awsconfig builds an aws.Config from LiteLLM's AWS settings, for
// every keyrelay provider that talks to AWS (Secrets Manager, KMS).
//
//	cfg, err := awsconfig.Load(ctx, opts, getenv)
//	client := secretsmanager.NewFromConfig(cfg)
//
// opts is a provider options map (LiteLLM's key_management_settings aws_*
// keys merged with keyrelay.providers and a team's options); getenv reads
// the environment (nil means os.Getenv). Load makes no network call:
// credentials are fetched, and cached, on first use by the SDK's own
// providers (config.LoadDefaultConfig, credentials, stscreds). Nothing is
// signed by hand.
//
// # Options and environment variables
//
// Every setting is read from its option key first, then from LiteLLM's
// environment variable:
//
//	option                  environment           meaning
//	region                  -                     keyrelay's region override (wins over aws_region_name)
//	aws_region_name         AWS_REGION_NAME,      region; then the profile's region, then us-west-2
//	                        AWS_REGION,           (LiteLLM's default)
//	                        AWS_DEFAULT_REGION
//	endpoint                -                     service endpoint URL (VPC endpoint, proxy, emulator)
//	ca_bundle               AWS_CA_BUNDLE         PEM file of CAs to trust, for every AWS call (STS too)
//	max_attempts            -                     SDK attempts per call, 1..10 (default 3)
//	aws_access_key_id       AWS_ACCESS_KEY_ID     static credentials (both or neither)
//	aws_secret_access_key   AWS_SECRET_ACCESS_KEY
//	aws_session_token       AWS_SESSION_TOKEN
//	aws_profile_name        AWS_PROFILE_NAME      shared config/credentials profile
//	aws_role_name           AWS_ROLE_NAME         ARN of a role to assume (sts:AssumeRole)
//	aws_session_name        AWS_SESSION_NAME      role session name (default "keyrelay")
//	aws_external_id         AWS_EXTERNAL_ID       ExternalId for AssumeRole
//	aws_web_identity_token  AWS_WEB_IDENTITY_TOKEN OIDC token for AssumeRoleWithWebIdentity; a value
//	                                              starting with "/" is a file, re-read on every refresh
//	aws_sts_endpoint        AWS_STS_ENDPOINT      STS endpoint URL for the role calls
//
// # Credentials
//
// In LiteLLM's order of precedence:
//
//  1. aws_role_name with aws_web_identity_token: AssumeRoleWithWebIdentity.
//  2. aws_role_name: AssumeRole (with aws_external_id), signed with the
//     base credentials below. When the process already runs as that role
//     through EKS IRSA (AWS_ROLE_ARN equal to aws_role_name and
//     AWS_WEB_IDENTITY_TOKEN_FILE set) the role is not assumed again, as
//     LiteLLM does.
//  3. aws_profile_name: the profile (which may itself assume roles, use
//     SSO or a credential process).
//  4. aws_access_key_id and aws_secret_access_key (with
//     aws_session_token): static credentials.
//  5. Otherwise the SDK's default chain (environment, shared files, web
//     identity from AWS_WEB_IDENTITY_TOKEN_FILE, ECS/EKS container
//     credentials, EC2 instance metadata).
//
// STS calls go to aws_sts_endpoint when set (its region is taken from a
// host of the form sts.REGION.amazonaws.com), else to the regional STS
// endpoint; never to the endpoint option, which is the service's.
//
// # Secrets
//
// Settings holds credentials; its String and GoString methods redact them,
// and errors from this package name options, never their values.
package awsconfig
