package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names of the directory layout (see the package documentation).
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	NodesDir   = "nodes"
	ClientsDir = "clients"
)

// Set is the contents of a certificates directory: a CA and the node and
// client bundles it issued, keyed by node ID and client name.
type Set struct {
	CA      *CA
	Nodes   map[string]*Bundle
	Clients map[string]*Bundle
}

// NewSet returns an empty set for ca.
func NewSet(ca *CA) *Set {
	return &Set{CA: ca, Nodes: map[string]*Bundle{}, Clients: map[string]*Bundle{}}
}

// WriteDir writes the set into dir in the documented layout, creating
// directories (mode 0700) as needed. Keys are written with mode 0600,
// certificates with 0644. A file that already exists with the same contents
// is left alone; one with different contents is never replaced and the
// error wraps ErrFileExists, so adding a node to a loaded set and writing it
// back only adds files. Each file appears complete or not at all.
func (s *Set) WriteDir(dir string) error {
	if s.CA == nil || s.CA.Cert == nil {
		return fmt.Errorf("quotamesh/certs: write %s: set has no CA", dir)
	}
	type file struct {
		path string
		data []byte
		mode fs.FileMode
	}
	files := []file{{filepath.Join(dir, CACertFile), s.CA.CertPEM(), 0o644}}
	if s.CA.Key != nil {
		k, err := s.CA.KeyPEM()
		if err != nil {
			return err
		}
		files = append(files, file{filepath.Join(dir, CAKeyFile), k, 0o600})
	}
	add := func(sub string, kind Kind, bundles map[string]*Bundle) error {
		for _, name := range sortedKeys(bundles) {
			b := bundles[name]
			id, err := IdentityOf(b.Cert)
			if err != nil {
				return fmt.Errorf("quotamesh/certs: write %s/%s: %w", sub, name, err)
			}
			if !id.Same(Identity{Kind: kind, Name: name}) {
				return fmt.Errorf("%w: %s/%s holds a certificate for %s", ErrNoIdentity, sub, name, id)
			}
			if !matches(b.Cert, b.Key) {
				return fmt.Errorf("%w: %s", ErrKeyMismatch, id)
			}
			k, err := b.KeyPEM()
			if err != nil {
				return err
			}
			files = append(files,
				file{filepath.Join(dir, sub, name+".crt"), b.CertPEM(), 0o644},
				file{filepath.Join(dir, sub, name+".key"), k, 0o600})
		}
		return nil
	}
	if err := add(NodesDir, KindNode, s.Nodes); err != nil {
		return err
	}
	if err := add(ClientsDir, KindClient, s.Clients); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return fmt.Errorf("quotamesh/certs: %w", err)
		}
		if err := writeNew(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeNew writes data to path unless path exists: then it succeeds only if
// the contents are equal. The data goes to a temporary file first and is
// linked into place, so a reader never sees half a file and an existing
// file is never replaced.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	if old, err := os.ReadFile(path); err == nil {
		if bytes.Equal(old, data) {
			return nil
		}
		return fmt.Errorf("%w: %s", ErrFileExists, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("quotamesh/certs: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("quotamesh/certs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("quotamesh/certs: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("quotamesh/certs: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("quotamesh/certs: sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("quotamesh/certs: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s (created concurrently)", ErrFileExists, path)
		}
		return fmt.Errorf("quotamesh/certs: %w", err)
	}
	return nil
}

// LoadDir reads a certificates directory. ca.crt is required; ca.key is
// read if present (a CA without it can verify but not issue); every
// nodes/<id>.crt and clients/<name>.crt needs its .key. Each certificate must
// carry the identity its file name says, be signed by the CA (validity dates
// are not checked here: the TLS handshake does that) and match its key.
func LoadDir(dir string) (*Set, error) {
	ca, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	s := NewSet(ca)
	if s.Nodes, err = loadBundles(dir, NodesDir, KindNode, ca); err != nil {
		return nil, err
	}
	if s.Clients, err = loadBundles(dir, ClientsDir, KindClient, ca); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadNode reads what node id needs from a certificates directory: its
// certificate and key as a tls.Certificate, and a pool holding the CA.
func LoadNode(dir, id string) (tls.Certificate, *x509.CertPool, error) {
	if err := ValidateNodeID(id); err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := loadCA(dir)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	b, err := loadBundle(filepath.Join(dir, NodesDir, id), NodeIdentity(id), ca)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return b.TLSCertificate(), ca.Pool(), nil
}

func loadCA(dir string) (*CA, error) {
	path := filepath.Join(dir, CACertFile)
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	all, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, c := range all {
		if !c.IsCA {
			return nil, fmt.Errorf("quotamesh/certs: %s: certificate %d (%q) is not a CA certificate", path, i+1, c.Subject.CommonName)
		}
	}
	cert := all[0]
	ca := &CA{Cert: cert, Trusted: all[1:]}
	keyPath := filepath.Join(dir, CAKeyFile)
	data, err = readBounded(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ca, nil
	case err != nil:
		return nil, err
	}
	if ca.Key, err = ParsePrivateKeyPEM(data); err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !matches(cert, ca.Key) {
		return nil, fmt.Errorf("%w: %s and %s", ErrKeyMismatch, path, keyPath)
	}
	return ca, nil
}

func loadBundles(dir, sub string, kind Kind, ca *CA) (map[string]*Bundle, error) {
	out := map[string]*Bundle{}
	entries, err := os.ReadDir(filepath.Join(dir, sub))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".crt")
		if !ok || e.IsDir() {
			continue
		}
		id := Identity{Kind: kind, Name: name}
		if err := id.Validate(); err != nil {
			return nil, fmt.Errorf("quotamesh/certs: %s: %w", filepath.Join(dir, sub, e.Name()), err)
		}
		b, err := loadBundle(filepath.Join(dir, sub, name), id, ca)
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}

// loadBundle reads base+".crt" and base+".key" and checks them against want
// and the CA.
func loadBundle(base string, want Identity, ca *CA) (*Bundle, error) {
	certData, err := readBounded(base + ".crt")
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertificatePEM(certData)
	if err != nil {
		return nil, fmt.Errorf("%s.crt: %w", base, err)
	}
	got, err := IdentityOf(cert)
	if err != nil {
		return nil, fmt.Errorf("%s.crt: %w", base, err)
	}
	if !got.Same(want) {
		return nil, fmt.Errorf("%w: %s.crt is for %s, its file name says %s", ErrNoIdentity, base, got, want)
	}
	if err := ca.signed(cert); err != nil {
		return nil, fmt.Errorf("%w: %s.crt: %w", ErrNotSignedByCA, base, err)
	}
	keyData, err := readBounded(base + ".key")
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKeyPEM(keyData)
	if err != nil {
		return nil, fmt.Errorf("%s.key: %w", base, err)
	}
	if !matches(cert, key) {
		return nil, fmt.Errorf("%w: %s.crt and %s.key", ErrKeyMismatch, base, base)
	}
	return &Bundle{Cert: cert, Key: key}, nil
}

// readBounded reads a file of at most MaxPEMSize bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: read %s: %w", path, err)
	}
	if len(data) > MaxPEMSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidPEM, path, MaxPEMSize)
	}
	return data, nil
}

func sortedKeys(m map[string]*Bundle) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
