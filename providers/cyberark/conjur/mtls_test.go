package conjur_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
)

// clientPKI returns a CA pool and the paths of a client certificate and key
// it issued.
func clientPKI(t *testing.T) (*x509.CertPool, string, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "host/keyrelay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certPath, keyPath
}

func TestClientCertificate(t *testing.T) {
	pool, certPath, keyPath := clientPKI(t)
	srv := conjurfake.NewMTLS(account, pool)
	t.Cleanup(srv.Close)
	srv.AddBranch("keyrelay")
	srv.AddUser(login, apiKey, "keyrelay")

	cfg := config(srv)
	cfg.ClientCertFile, cfg.ClientKeyFile = certPath, keyPath
	p := newProvider(t, cfg)
	put(t, p, "mtls", "v")

	noCert := newProvider(t, config(srv))
	_, err := noCert.Get(context.Background(), "mtls", "")
	wantErr(t, "no client certificate", err, providers.ErrAccessDenied, false)

	cfg.ClientKeyFile = certPath // not a key
	if _, err := newProviderErr(cfg); err == nil {
		t.Error("a bad client key pair was accepted")
	}
}
