package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// LocalKMSVersion is the local-kms module version the Makefile pins.
const LocalKMSVersion = "v0.0.0-20260228092603-2a5e92d09ab6"

// The region and account local-kms is started with (its key ARNs are
// arn:aws:kms:LocalKMSRegion:LocalKMSAccountID:key/...).
const (
	LocalKMSRegion    = "us-east-1"
	LocalKMSAccountID = "111122223333"
)

// LocalKMSBinary returns bin/local-kms, installing the pinned version
// with make (from the module proxy into a cache outside the tree) when it
// is missing.
func LocalKMSBinary(t testing.TB) string { return MakeTool(t, "local-kms") }

// LocalKMS is a running local-kms process: AWS KMS's JSON API on
// 127.0.0.1, with real AES-GCM symmetric keys, aliases,
// GenerateDataKey/Encrypt/Decrypt and encryption contexts.
type LocalKMS struct {
	// URL is the endpoint to give the SDK (BaseEndpoint).
	URL     string
	Port    int
	DataDir string
	bin     string
	logDir  string
	cmd     *exec.Cmd
	exited  chan struct{}
	t       testing.TB
	mu      sync.Mutex
}

// StartLocalKMS starts local-kms on a free port with a fresh data
// directory and waits until it answers KMS requests. It is stopped at the
// end of the test.
func StartLocalKMS(t testing.TB) *LocalKMS {
	t.Helper()
	k := &LocalKMS{bin: LocalKMSBinary(t), DataDir: t.TempDir(), logDir: t.TempDir(), t: t}
	// local-kms listens on every interface (":PORT"); a port that was free
	// a moment ago may be taken by the time it binds, so retry a few.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		k.Port = FreePort(t)
		k.URL = "http://127.0.0.1:" + strconv.Itoa(k.Port)
		if lastErr = k.start(); lastErr == nil {
			t.Cleanup(k.Stop)
			return k
		}
		k.Stop()
	}
	t.Fatalf("local-kms: %v", lastErr)
	return nil
}

func (k *LocalKMS) start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cmd := exec.Command(k.bin)
	cmd.Env = append(os.Environ(),
		"PORT="+strconv.Itoa(k.Port),
		"KMS_REGION="+LocalKMSRegion,
		"KMS_ACCOUNT_ID="+LocalKMSAccountID,
		"KMS_DATA_PATH="+k.DataDir,
		// No seeding: the default path is /init/seed.yaml.
		"KMS_SEED_PATH="+filepath.Join(k.logDir, "no-seed.yaml"),
	)
	log, err := os.Create(filepath.Join(k.logDir, fmt.Sprintf("local-kms-%d.log", time.Now().UnixNano())))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start: %w", err)
	}
	k.cmd = cmd
	exited := make(chan struct{})
	k.exited = exited
	go func() { _ = cmd.Wait(); log.Close(); close(exited) }()

	client := k.clientWith(func(o *kms.Options) { o.RetryMaxAttempts = 1 })
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListKeys(ctx, &kms.ListKeysInput{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(log.Name())
			return fmt.Errorf("exited before answering: %s", tail(string(out), 2000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s within 15s: %v", k.URL, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Stop terminates local-kms (SIGTERM, then SIGKILL after 5 s).
func (k *LocalKMS) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	terminate(k.cmd, k.exited)
	k.cmd = nil
}

// AWSConfig returns an SDK configuration for this server: its endpoint,
// LocalKMSRegion, dummy static credentials (local-kms checks none) and a
// single attempt per call, so tests see every error as it happens.
func (k *LocalKMS) AWSConfig() aws.Config {
	return aws.Config{
		Region:           LocalKMSRegion,
		BaseEndpoint:     aws.String(k.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDLOCALKMS", "local-kms-secret", ""),
		RetryMaxAttempts: 1,
	}
}

// Options returns keyrelay provider options (awsconfig's option keys)
// pointing at this server, with dummy static credentials.
func (k *LocalKMS) Options() map[string]string {
	return map[string]string{
		"endpoint":              k.URL,
		"aws_region_name":       LocalKMSRegion,
		"aws_access_key_id":     "AKIDLOCALKMS",
		"aws_secret_access_key": "local-kms-secret",
		"max_attempts":          "1",
	}
}

// Client returns a KMS client for this server.
func (k *LocalKMS) Client() *kms.Client { return k.clientWith() }

func (k *LocalKMS) clientWith(optFns ...func(*kms.Options)) *kms.Client {
	return kms.NewFromConfig(k.AWSConfig(), optFns...)
}

// CreateKey creates a symmetric encryption key (SYMMETRIC_DEFAULT,
// ENCRYPT_DECRYPT) and returns its ARN. With alias non-empty it also
// creates that alias ("alias/" is prepended when missing) pointing at it.
func (k *LocalKMS) CreateKey(t testing.TB, alias string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := k.Client()
	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
		Description: aws.String("keyrelay test key"),
	})
	if err != nil {
		t.Fatalf("local-kms CreateKey: %v", err)
	}
	arn := aws.ToString(out.KeyMetadata.Arn)
	if alias != "" {
		if !strings.HasPrefix(alias, "alias/") {
			alias = "alias/" + alias
		}
		if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: out.KeyMetadata.KeyId}); err != nil {
			t.Fatalf("local-kms CreateAlias %s: %v", alias, err)
		}
	}
	return arn
}
