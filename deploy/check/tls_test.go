package check

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// httpsClient trusts the cluster CA of a 'quotamesh certs init' directory
// and presents its admin client certificate.
func httpsClient(t *testing.T, certDir string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(mustRead(t, filepath.Join(certDir, "ca.crt")))) {
		t.Fatal("no CA certificate")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "clients", "admin.crt"), filepath.Join(certDir, "clients", "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
