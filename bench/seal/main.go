// Command seal benchmarks the envelope sealer (package seal): sealing and
// opening throughput with each key wrapper (the local keyring, AWS KMS on
// local-kms, Google Cloud KMS on the in-process gRPC fake, Vault Transit
// on the Vault dev server, Azure Key Vault keys on the in-process HTTPS
// fake) against plain AES-256-GCM with a local key (events.Keyring, alg
// A256GCM), in the same run, and prints each rate with its ratio to the
// baseline.
//
// Data keys are cached (the defaults: one data key seals a team's values
// for 5 minutes or 1000 values; unwrapped keys are kept 5 minutes), so a
// steady state costs one KMS call per team and window; the "per value"
// column turns the seal cache off (data_key_max_uses 1) to show what one
// KMS round trip per value costs instead.
//
// It starts bin/local-kms and bin/vault on free loopback ports; a wrapper
// whose binary is missing is skipped with a note.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/events"
	awskmsw "github.com/keyrelay/keyrelay/providers/aws/kms"
	azkeysw "github.com/keyrelay/keyrelay/providers/azure/keyvault/keys"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	gcpkms "github.com/keyrelay/keyrelay/providers/google/kms"
	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/providers/vault/transit"
	"github.com/keyrelay/keyrelay/seal"
)

func main() {
	n := flag.Int("values", 200000, "values sealed and opened per run (with 50 teams: 4,000 a team, 4 data keys each at the default 1,000 uses)")
	teams := flag.Int("teams", 50, "teams the values belong to (one data key each per window)")
	conc := flag.Int("concurrency", 8, "Seal/Open calls in flight")
	perValue := flag.Int("per-value", 300, "values sealed with a data key per value (no cache), for the last column; 0 skips it")
	runs := flag.Int("runs", 3, "runs of each (the median is reported)")
	lkmsBin := flag.String("local-kms", "bin/local-kms", "local-kms binary")
	vaultBin := flag.String("vault", "bin/vault", "vault binary (make bin/vault)")
	flag.Parse()
	if err := run(*n, *teams, *conc, *perValue, *runs, *lkmsBin, *vaultBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// subject is one way of sealing: the baseline or a Sealer over a wrapper.
type subject struct {
	name string
	// mk returns a fresh sealer and opener (no cached keys), with cfg.
	mk func(cfg seal.Config) (events.Sealer, events.Opener, error)
}

func run(n, teams, conc, perValue, runs int, lkmsBin, vaultBin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-seal")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	baseKey := make([]byte, 32)
	_, _ = rand.Read(baseKey)
	kr, err := events.NewKeyring("bench", map[string][]byte{"bench": baseKey})
	if err != nil {
		return err
	}
	subjects := []subject{
		{"plain AES-256-GCM, local key (baseline)", func(seal.Config) (events.Sealer, events.Opener, error) { return kr, kr, nil }},
		{"keyring wrapper (A256GCM-KEYRING)", func(cfg seal.Config) (events.Sealer, events.Opener, error) {
			w, err := seal.NewKeyringWrapper(kr, "")
			if err != nil {
				return nil, nil, err
			}
			return sealer(w, cfg)
		}},
	}
	var notes []string

	// AWS KMS on local-kms.
	if lk, stop, err := startLocalKMS(lkmsBin, dir); err != nil {
		notes = append(notes, "aws_kms skipped: "+err.Error())
	} else {
		defer stop()
		keyID, err := lk.createKey(ctx)
		if err != nil {
			return err
		}
		subjects = append(subjects, subject{"AWS KMS on local-kms (A256GCM-KMS)", func(cfg seal.Config) (events.Sealer, events.Opener, error) {
			w, err := awskmsw.NewWrapper(lk.client, keyID)
			if err != nil {
				return nil, nil, err
			}
			return sealer(w, cfg)
		}})
	}

	// Google Cloud KMS on the in-process gRPC fake.
	gf, err := kmsfake.Start()
	if err != nil {
		return err
	}
	defer gf.Close()
	gkey, err := gf.CreateKey("projects/bench/locations/global/keyRings/keyrelay/cryptoKeys/kek")
	if err != nil {
		return err
	}
	gclient, err := gcpkms.NewClient(ctx, map[string]string{gcpkms.OptionEndpoint: gf.Addr(), gcpkms.OptionInsecure: "true"})
	if err != nil {
		return err
	}
	defer gclient.Close()
	subjects = append(subjects, subject{"Google Cloud KMS on the gRPC fake (A256GCM-GCPKMS)", func(cfg seal.Config) (events.Sealer, events.Opener, error) {
		w, err := gcpkms.NewWrapper(gclient, gkey)
		if err != nil {
			return nil, nil, err
		}
		return sealer(w, cfg)
	}})

	// Vault Transit on the Vault dev server.
	vaultVersion := ""
	if _, err := os.Stat(vaultBin); err != nil {
		notes = append(notes, "vault_transit skipped: "+vaultBin+" is missing (make bin/vault)")
	} else {
		addr, stop, err := benchkit.StartVault(vaultBin, dir, benchkit.Isolation{})
		if err != nil {
			return err
		}
		defer stop()
		vc, err := transit.NewClient(map[string]string{transit.OptionAddress: addr, transit.OptionToken: "root"}, func(string) string { return "" })
		if err != nil {
			return err
		}
		if err := vc.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
			return fmt.Errorf("enable transit: %w", err)
		}
		if _, err := vc.Logical().WriteWithContext(ctx, "transit/keys/keyrelay", map[string]any{"type": "aes256-gcm96"}); err != nil {
			return err
		}
		if h, err := vc.Sys().HealthWithContext(ctx); err == nil {
			vaultVersion = h.Version
		}
		subjects = append(subjects, subject{"Vault Transit on the dev server (A256GCM-VAULT)", func(cfg seal.Config) (events.Sealer, events.Opener, error) {
			w, err := transit.NewWrapper(vc.Logical(), "", "keyrelay")
			if err != nil {
				return nil, nil, err
			}
			return sealer(w, cfg)
		}})
	}

	// Azure Key Vault keys on the in-process HTTPS fake.
	az := kvfake.New()
	az.Token = "bench"
	defer az.Close()
	azc, err := azkeysw.NewClientWithCredential(az.URL, staticCred{}, azcore.ClientOptions{Transport: az.Client()}, true)
	if err != nil {
		return err
	}
	kty := azkeys.KeyTypeRSA
	if _, err := azc.CreateKey(ctx, "keyrelay-kek", azkeys.CreateKeyParameters{Kty: &kty, KeySize: to.Ptr[int32](2048)}, nil); err != nil {
		return err
	}
	subjects = append(subjects, subject{"Azure Key Vault keys on the HTTPS fake (A256GCM-AZKV)", func(cfg seal.Config) (events.Sealer, events.Opener, error) {
		w, err := azkeysw.NewWrapper(azc, "keyrelay-kek")
		if err != nil {
			return nil, nil, err
		}
		return sealer(w, cfg)
	}})

	fmt.Printf("keyrelay sealing benchmark: %d values of 51 bytes over %d teams per run, concurrency %d, %d runs (median), %d CPUs, %s\n",
		n, teams, conc, runs, runtime.NumCPU(), runtime.Version())
	if vaultVersion != "" {
		fmt.Printf("Vault %s dev server, local-kms and the fakes on loopback; data-key caches at their defaults (5m / 1000 values)\n", vaultVersion)
	}
	for _, note := range notes {
		fmt.Println("note:", note)
	}
	fmt.Printf("\n%-55s %14s %8s %14s %8s %18s\n", "wrapper", "seal/s", "ratio", "open/s", "ratio", "seal/s per value")
	// Warm up (CPU frequency, the heap, connection pools) before measuring.
	for _, sj := range subjects {
		if _, _, err := measure(ctx, sj, min(n, 2000), teams, conc); err != nil {
			return fmt.Errorf("%s: %w", sj.name, err)
		}
	}
	var baseSeal, baseOpen float64
	for i, sj := range subjects {
		var seals, opens []float64
		for r := 0; r < runs; r++ {
			s, o, err := measure(ctx, sj, n, teams, conc)
			if err != nil {
				return fmt.Errorf("%s: %w", sj.name, err)
			}
			seals, opens = append(seals, s), append(opens, o)
		}
		ms, mo := benchkit.Median(seals), benchkit.Median(opens)
		if i == 0 {
			baseSeal, baseOpen = ms, mo
		}
		pv := "-"
		if perValue > 0 && i > 0 {
			rate, err := measurePerValue(ctx, sj, perValue, conc)
			if err != nil {
				return fmt.Errorf("%s per value: %w", sj.name, err)
			}
			pv = strconv.FormatFloat(rate, 'f', 0, 64)
		}
		fmt.Printf("%-55s %14.0f %8.2f %14.0f %8.2f %18s\n", sj.name, ms, ms/baseSeal, mo, mo/baseOpen, pv)
	}
	return nil
}

func sealer(w seal.Wrapper, cfg seal.Config) (events.Sealer, events.Opener, error) {
	s, err := seal.New(w, cfg)
	return s, s, err
}

// measure seals n values over teams with one sealer, then opens them all
// with a fresh opener (whose first Open of each data key unwraps it), and
// returns both rates.
func measure(ctx context.Context, sj subject, n, teams, conc int) (sealRate, openRate float64, err error) {
	s, _, err := sj.mk(seal.Config{})
	if err != nil {
		return 0, 0, err
	}
	bindings := make([]events.Binding, n)
	for i := range bindings {
		bindings[i] = events.Binding{TeamID: "team-" + strconv.Itoa(i%teams), KeyID: "key-" + strconv.Itoa(i), Generation: uint64(i + 1)}
	}
	value := []byte("sk-keyrelay-bench-0123456789abcdef0123456789abcdef")
	sealed := make([]*events.SealedValue, n)
	start := time.Now()
	if err := parallel(n, conc, func(i int) error {
		sv, err := s.Seal(ctx, value, bindings[i])
		sealed[i] = sv
		return err
	}); err != nil {
		return 0, 0, err
	}
	sealRate = float64(n) / time.Since(start).Seconds()
	_, o, err := sj.mk(seal.Config{})
	if err != nil {
		return 0, 0, err
	}
	start = time.Now()
	if err := parallel(n, conc, func(i int) error {
		pt, err := o.Open(ctx, sealed[i], bindings[i])
		if err == nil && len(pt) != len(value) {
			err = errors.New("opened another value")
		}
		return err
	}); err != nil {
		return 0, 0, err
	}
	openRate = float64(n) / time.Since(start).Seconds()
	return sealRate, openRate, nil
}

// measurePerValue seals n values with a data key each (one KMS call per
// value).
func measurePerValue(ctx context.Context, sj subject, n, conc int) (float64, error) {
	s, _, err := sj.mk(seal.Config{DataKeyMaxUses: 1})
	if err != nil {
		return 0, err
	}
	value := []byte("sk-keyrelay-bench-0123456789abcdef0123456789abcdef")
	start := time.Now()
	err = parallel(n, conc, func(i int) error {
		_, err := s.Seal(ctx, value, events.Binding{TeamID: "team-pv", KeyID: "key-" + strconv.Itoa(i), Generation: 1})
		return err
	})
	return float64(n) / time.Since(start).Seconds(), err
}

func parallel(n, conc int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

type staticCred struct{}

func (staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "bench", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// localKMS is a running local-kms process and a client for it.
type localKMS struct {
	client *awskms.Client
}

func startLocalKMS(bin, dir string) (*localKMS, func(), error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, nil, fmt.Errorf("%s is missing (make tools)", bin)
	}
	port := benchkit.FreePort(false)
	data := filepath.Join(dir, "local-kms")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "local-kms.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "KMS_REGION=us-east-1", "KMS_ACCOUNT_ID=111122223333",
		"KMS_DATA_PATH="+data, "KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait(); logf.Close() }
	client := awskms.NewFromConfig(aws.Config{Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:" + strconv.Itoa(port)),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCH", "bench-secret", ""), RetryMaxAttempts: 1,
		HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}})
	for i := 0; ; i++ {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListKeys(cctx, &awskms.ListKeysInput{})
		cancel()
		if err == nil {
			return &localKMS{client: client}, stop, nil
		}
		if i > 300 {
			stop()
			return nil, nil, fmt.Errorf("local-kms did not answer: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (k *localKMS) createKey(ctx context.Context) (string, error) {
	out, err := k.client.CreateKey(ctx, &awskms.CreateKeyInput{})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.KeyMetadata.Arn), nil
}
