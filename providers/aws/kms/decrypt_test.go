package kms

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/providers"
)

// aws_kms/ values produced by the SDK's Encrypt decrypt as LiteLLM reads
// them.
func TestDecryptLiteLLMValues(t *testing.T) {
	env := startKMS(t)
	other := env.srv.CreateKey(t, "")
	enc := func(v string) string { return encryptLiteLLM(t, env.client, env.keyARN, []byte(v), nil) }
	withNewlines := func(b64 string) string {
		var sb strings.Builder
		for i := 0; i < len(b64); i += 16 {
			sb.WriteString(b64[i:min(i+16, len(b64))])
			sb.WriteString("\n")
		}
		return sb.String()
	}
	tests := []struct {
		name  string
		value string
		keyID string
		want  string
	}{
		{"prefixed", "aws_kms/" + enc("sk-1234"), "", "sk-1234"},
		{"bare base64 (LITELLM_SECRET_AWS_KMS_ style)", enc("sk-bare"), "", "sk-bare"},
		{"whitespace stripped as str.strip", "aws_kms/" + enc(" \t\x1c sk-padded \n\u3000"), "", "sk-padded"},
		{"inner whitespace kept", "aws_kms/" + enc("a b"), "", "a b"},
		{"unicode", "aws_kms/" + enc("sk-ü-秘密-🔑"), "", "sk-ü-秘密-🔑"},
		{"True stays text", "aws_kms/" + enc("True"), "", "True"},
		{"base64 with line breaks (b64decode skips them)", "aws_kms/" + withNewlines(enc("sk-wrapped")), "", "sk-wrapped"},
		{"decoding stops at padding", "aws_kms/" + enc("sk-x") + "=trailing garbage", "", "sk-x"},
		{"key id pinned by alias", "aws_kms/" + enc("sk-pinned"), env.alias, "sk-pinned"},
		{"key id pinned by ARN", "aws_kms/" + enc("sk-pinned"), env.keyARN, "sk-pinned"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := &countingAPI{API: env.client}
			got, err := NewDecrypter(api, tc.keyID).Decrypt(bg, tc.value)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("Decrypt = %q, want %q", got, tc.want)
			}
			if n := api.decrypt.Load(); n != 1 {
				t.Errorf("%d Decrypt calls, want 1", n)
			}
		})
	}

	failures := []struct {
		name  string
		value string
		keyID string
		code  string
		is    []error
		calls int64
	}{
		{"incorrect padding", "aws_kms/QUJ", "", "", []error{ErrMalformedValue, providers.ErrInvalid}, 0},
		{"one extra character", "aws_kms/QUJDR", "", "", []error{ErrMalformedValue}, 0},
		{"non-ASCII", "aws_kms/QUJD" + sentinel + "é", "", "", []error{ErrMalformedValue}, 0},
		{"empty", "aws_kms/", "", "", []error{ErrMalformedValue}, 0},
		{"tampered ciphertext", "aws_kms/" + base64.StdEncoding.EncodeToString(flip(mustB64(t, enc(sentinel)), 90)), "", "InvalidCiphertextException", []error{ErrInvalidCiphertext}, 1},
		{"encrypted with a context (LiteLLM passes none)", "aws_kms/" + encryptLiteLLM(t, env.client, env.keyARN, []byte(sentinel), map[string]string{"app": "x"}), "", "InvalidCiphertextException", []error{ErrInvalidCiphertext}, 1},
		{"pinned to another key", "aws_kms/" + enc(sentinel), other, "InvalidCiphertextException", []error{ErrInvalidCiphertext}, 1},
		{"not a KMS ciphertext", "aws_kms/" + base64.StdEncoding.EncodeToString([]byte(sentinel+sentinel)), "", "", nil, 1},
		// local-kms answers 400 ValidationException, but under load it
		// sometimes answers 400 before reading the whole oversized body, with
		// no error code: what must hold is a permanent ErrInvalid that does
		// not echo the value.
		{"larger than KMS accepts (local-kms echoes it)", "aws_kms/" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte(sentinel), 300)), "", "", []error{providers.ErrInvalid}, 1},
		{"unknown key", "aws_kms/" + enc(sentinel), "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000", "NotFoundException", []error{ErrKeyUnusable}, 1},
	}
	for _, tc := range failures {
		t.Run("error/"+tc.name, func(t *testing.T) {
			api := &countingAPI{API: env.client}
			got, err := NewDecrypter(api, tc.keyID).Decrypt(bg, tc.value)
			if err == nil {
				t.Fatalf("Decrypt succeeded: %q", got)
			}
			var pe *providers.Error
			if !errors.As(err, &pe) || pe.Kind != providers.Permanent || providers.IsRetryable(err) {
				t.Errorf("error %v is not a permanent *providers.Error", err)
			}
			if tc.code != "" && Code(err) != tc.code {
				t.Errorf("Code = %q, want %q (%v)", Code(err), tc.code, err)
			}
			for _, want := range tc.is {
				if !errors.Is(err, want) {
					t.Errorf("error %v is not %v", err, want)
				}
			}
			if n := api.decrypt.Load(); n != tc.calls {
				t.Errorf("%d Decrypt calls, want %d", n, tc.calls)
			}
			assertClean(t, err, []byte(tc.value), []byte(strings.TrimPrefix(tc.value, "aws_kms/")))
		})
	}

	t.Run("error/not UTF-8", func(t *testing.T) {
		v := "aws_kms/" + encryptLiteLLM(t, env.client, env.keyARN, []byte{0xff, 0xfe, 's', 'k'}, nil)
		_, err := NewDecrypter(env.client, "").Decrypt(bg, v)
		if err == nil || providers.IsRetryable(err) || !errors.Is(err, providers.ErrInvalid) {
			t.Errorf("Decrypt = %v, want a permanent invalid error", err)
		}
	})

	t.Run("error/disabled key", func(t *testing.T) {
		arn := env.srv.CreateKey(t, "")
		v := "aws_kms/" + encryptLiteLLM(t, env.client, arn, []byte(sentinel), nil)
		if _, err := env.client.DisableKey(bg, &awskms.DisableKeyInput{KeyId: aws.String(arn)}); err != nil {
			t.Fatal(err)
		}
		// With KeyId, KMS says DisabledException; without, local-kms (like
		// KMS for keys it will not name) answers AccessDeniedException.
		_, err := NewDecrypter(env.client, arn).Decrypt(bg, v)
		if Code(err) != "DisabledException" || !errors.Is(err, ErrKeyUnusable) || providers.IsRetryable(err) {
			t.Errorf("Decrypt = %v (code %q), want a permanent DisabledException", err, Code(err))
		}
		assertClean(t, err)
		_, err = NewDecrypter(env.client, "").Decrypt(bg, v)
		if Code(err) != "AccessDeniedException" || !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) {
			t.Errorf("Decrypt = %v (code %q), want a permanent AccessDeniedException", err, Code(err))
		}
		assertClean(t, err)
	})
}

func mustB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// LITELLM_SECRET_AWS_KMS_* variables and aws_kms/ values in the
// environment, as decrypt_env_var handles them.
func TestDecryptEnv(t *testing.T) {
	env := startKMS(t)
	enc := func(v string) string { return encryptLiteLLM(t, env.client, env.keyARN, []byte(v), nil) }
	environ := []string{
		"PATH=/usr/bin",
		"LITELLM_SECRET_AWS_KMS_DATABASE_URL=" + enc("postgres://u:p@db/x"),
		"litellm_secret_aws_kms_openai_api_key=" + enc("sk-openai"),
		"ANTHROPIC_API_KEY=aws_kms/" + enc("sk-ant"),
		"LITELLM_SECRET_AWS_KMSX=" + enc("no-underscore"),
		"X_LITELLM_SECRET_AWS_KMS_Y=aws_kms/" + enc("middle"),
		"PLAIN=not-encrypted",
		"AWS_KMS_LOOKALIKE=aws_kms",
		// The first occurrence of a name counts, as in Python's os.environ.
		"ANTHROPIC_API_KEY=aws_kms/" + enc("sk-ant-second"),
		// Two variables mapping to one name: the later one wins.
		"REDIS_PASSWORD=aws_kms/" + enc("redis-1"),
		"LITELLM_SECRET_AWS_KMS_REDIS_PASSWORD=" + enc("redis-2"),
		"=ignored",
		"NOEQUALS",
	}
	api := &countingAPI{API: env.client}
	got, err := NewDecrypter(api, "").DecryptEnv(bg, environ)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"DATABASE_URL":            "postgres://u:p@db/x",
		"openai_api_key":          "sk-openai",
		"ANTHROPIC_API_KEY":       "sk-ant",
		"LITELLM_SECRET_AWS_KMSX": "no-underscore",
		"X_Y":                     "middle",
		"REDIS_PASSWORD":          "redis-2",
	}
	if len(got) != len(want) {
		t.Errorf("DecryptEnv returned %d variables, want %d: %v", len(got), len(want), keys(got))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if n := api.decrypt.Load(); n != 7 {
		t.Errorf("%d Decrypt calls, want 7", n)
	}

	// One bad variable fails the whole call, naming it but not its value.
	bad := append(environ[:3:3], "LITELLM_SECRET_AWS_KMS_BROKEN="+base64.StdEncoding.EncodeToString([]byte(sentinel+"-not-a-blob")))
	out, err := NewDecrypter(env.client, "").DecryptEnv(bg, bad)
	if err == nil || out != nil {
		t.Fatalf("DecryptEnv = %v, %v; want an error and no result", out, err)
	}
	if !strings.Contains(err.Error(), "LITELLM_SECRET_AWS_KMS_BROKEN") {
		t.Errorf("error does not name the variable: %v", err)
	}
	assertClean(t, err, []byte(bad[3]))
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Expected values computed with CPython 3: k.lower().startswith(...) and
// re.sub("litellm_secret_aws_kms_", "", k, flags=re.IGNORECASE).
func TestEnvNames(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		isKMS   bool
		envName string
	}{
		{"LITELLM_SECRET_AWS_KMS_DB", "x", true, "DB"},
		{"litellm_secret_aws_kms_db", "x", true, "db"},
		{"LiteLLM_Secret_AWS_KMS_Mixed", "x", true, "Mixed"},
		{"LITELLM_SECRET_AWS_KMSX", "x", true, "LITELLM_SECRET_AWS_KMSX"},
		{"LITELLM_SECRET_AWS_KMS", "x", true, "LITELLM_SECRET_AWS_KMS"},
		{"X_LITELLM_SECRET_AWS_KMS_Y", "x", false, "X_Y"},
		{"X_LITELLM_SECRET_AWS_KMS_Y", "aws_kms/QQ==", true, "X_Y"},
		{"LITELLM_SECRET_AWS_KMS_LITELLM_SECRET_AWS_KMS_Z", "x", true, "Z"},
		{"OPENAI_API_KEY", "aws_kms/QQ==", true, "OPENAI_API_KEY"},
		{"OPENAI_API_KEY", "AWS_KMS/QQ==", false, "OPENAI_API_KEY"},
		{"OPENAI_API_KEY", " aws_kms/QQ==", false, "OPENAI_API_KEY"},
		{"LITELLM_SECRET_AWS_\u212aMS_A", "x", true, "A"},  // KELVIN SIGN lower-cases to k
		{"L\u0130TELLM_SECRET_AWS_KMS_A", "x", false, "A"}, // İ: lower() gives "i̇", re matches
		{"L\u0131TELLM_SECRET_AWS_KMS_A", "x", false, "A"}, // ı
		{"LITELLM_\u017fECRET_AWS_KMS_A", "x", false, "A"}, // ſ
		{"ĹITELLM_SECRET_AWS_KMS_A", "x", false, "ĹITELLM_SECRET_AWS_KMS_A"},
	}
	for _, tc := range tests {
		if got := IsKMSEnv(tc.name, tc.value); got != tc.isKMS {
			t.Errorf("IsKMSEnv(%q, %q) = %v, want %v", tc.name, tc.value, got, tc.isKMS)
		}
		if got := EnvName(tc.name); got != tc.envName {
			t.Errorf("EnvName(%q) = %q, want %q", tc.name, got, tc.envName)
		}
	}
	if !EnvEnabled(func(k string) string { return map[string]string{"USE_AWS_KMS": "True"}[k] }) ||
		EnvEnabled(func(k string) string { return map[string]string{"USE_AWS_KMS": "true"}[k] }) || EnvEnabled(nil) {
		t.Error("EnvEnabled: only exactly True enables it")
	}
	if !IsKMSValue("aws_kms/x") || IsKMSValue("aws_kms") || IsKMSValue("os.environ/aws_kms/x") {
		t.Error("IsKMSValue")
	}
}

// Expected values computed with CPython 3's base64.b64decode.
func TestPyB64Decode(t *testing.T) {
	tests := []struct {
		in, want string // want in hex; "ERR" for an error
	}{
		{"QQ==", "41"}, {"QQ", "ERR"}, {"Q", "ERR"}, {"QQ==garbage", "41"}, {"Q Q = =", "41"},
		{"QUJD", "414243"}, {"QUJD\n", "414243"}, {"QU=JD", "414243"}, {"QUJ", "ERR"}, {"QUJ=", "4142"},
		{"QQ-_==", "41"}, {"=QQ==", "41"}, {"QUJDRA", "ERR"}, {"QUJDRA=", "ERR"}, {"QUJDRA==", "41424344"},
		{"Q=Q==", "41"}, {"QU\nJD\nRA==", "41424344"}, {"", ""}, {"====", ""}, {"QQ=x=", "410c"},
		{"QUI", "ERR"}, {"Q_U_J_D", "414243"}, {"QUJDR", "ERR"}, {"QUJD====", "414243"}, {"QUJDé", "ERR"},
	}
	for _, tc := range tests {
		got, err := pyB64Decode(tc.in)
		switch {
		case tc.want == "ERR":
			if err == nil {
				t.Errorf("pyB64Decode(%q) = %x, want an error", tc.in, got)
			}
		case err != nil:
			t.Errorf("pyB64Decode(%q): %v", tc.in, err)
		case hex.EncodeToString(got) != tc.want:
			t.Errorf("pyB64Decode(%q) = %x, want %s", tc.in, got, tc.want)
		}
	}
	// Every canonical encoding decodes to its input.
	for n := 0; n < 40; n++ {
		b := bytes.Repeat([]byte{byte(n * 7)}, n)
		got, err := pyB64Decode(base64.StdEncoding.EncodeToString(b))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%d bytes: %x, %v", n, got, err)
		}
	}
}

func TestPyStrip(t *testing.T) {
	for in, want := range map[string]string{
		"  x  ": "x", "\x1cx\x1f": "x", "\u3000x\u00a0": "x", "\u200bx": "\u200bx", "\u0085x\u2028": "x", "": "", " \t\n": "",
	} {
		if got := string(pyStrip([]byte(in))); got != want {
			t.Errorf("pyStrip(%q) = %q, want %q", in, got, want)
		}
	}
}
