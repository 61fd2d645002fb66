package certs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testSet(t *testing.T) *Set {
	t.Helper()
	ca := newTestCA(t)
	s := NewSet(ca)
	for _, id := range []string{"n1", "n2"} {
		b, err := ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		s.Nodes[id] = b
	}
	c, err := ca.IssueClient("cli", RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.Clients["cli"] = c
	return s
}

func TestWriteDirLoadDirRoundTrip(t *testing.T) {
	s := testSet(t)
	dir := t.TempDir()
	if err := s.WriteDir(dir); err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	modes := map[string]fs.FileMode{
		"ca.crt": 0o644, "ca.key": 0o600,
		"nodes/n1.crt": 0o644, "nodes/n1.key": 0o600, "nodes/n2.crt": 0o644, "nodes/n2.key": 0o600,
		"clients/cli.crt": 0o644, "clients/cli.key": 0o600,
	}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %v, want %v", name, got, want)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "*", ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	got, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	if !got.CA.Cert.Equal(s.CA.Cert) || got.CA.Key == nil || !got.CA.Key.Equal(s.CA.Key) {
		t.Errorf("LoadDir CA differs")
	}
	if len(got.Nodes) != 2 || len(got.Clients) != 1 {
		t.Fatalf("LoadDir: %d nodes, %d clients, want 2 and 1", len(got.Nodes), len(got.Clients))
	}
	for id, b := range s.Nodes {
		if g := got.Nodes[id]; g == nil || !g.Cert.Equal(b.Cert) || !g.Key.Equal(b.Key) {
			t.Errorf("node %s differs after the round trip", id)
		}
	}

	// Writing the same set again changes nothing; adding a node adds files.
	if err := got.WriteDir(dir); err != nil {
		t.Errorf("WriteDir of the loaded set: %v", err)
	}
	n3, err := got.CA.IssueNode("n3", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got.Nodes["n3"] = n3
	if err := got.WriteDir(dir); err != nil {
		t.Errorf("WriteDir with one more node: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nodes", "n3.key")); err != nil {
		t.Errorf("n3.key not written: %v", err)
	}

	// A different CA never replaces the existing files.
	other := testSet(t)
	if err := other.WriteDir(dir); !errors.Is(err, ErrFileExists) {
		t.Errorf("WriteDir of another set over the directory = %v, want ErrFileExists", err)
	}
	again, err := LoadDir(dir)
	if err != nil || !again.CA.Cert.Equal(s.CA.Cert) {
		t.Errorf("directory changed by a refused WriteDir: %v", err)
	}
}

func TestLoadNode(t *testing.T) {
	s := testSet(t)
	dir := t.TempDir()
	if err := s.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	// A node's directory holds no CA key.
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	cert, pool, err := LoadNode(dir, "n2")
	if err != nil {
		t.Fatalf("LoadNode: %v", err)
	}
	if id, err := NodeID(cert.Leaf); id != "n2" || err != nil {
		t.Errorf("LoadNode leaf is for %q, %v", id, err)
	}
	if pool == nil || !pool.Equal(s.CA.Pool()) {
		t.Errorf("LoadNode pool differs from the CA's")
	}
	if _, _, err := LoadNode(dir, "n9"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadNode of a missing node = %v, want fs.ErrNotExist", err)
	}
	if _, _, err := LoadNode(dir, "../ca"); !errors.Is(err, ErrInvalidNodeID) {
		t.Errorf("LoadNode(../ca) = %v, want ErrInvalidNodeID", err)
	}
	set, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir without ca.key: %v", err)
	}
	if set.CA.Key != nil {
		t.Errorf("CA key loaded from nowhere")
	}
	if _, err := set.CA.IssueNode("n4", nil, time.Hour); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("IssueNode without the CA key = %v, want ErrNoCAKey", err)
	}
}

func TestLoadDirRefusesInconsistentFiles(t *testing.T) {
	steps := []struct {
		name   string
		tamper func(t *testing.T, dir string, s *Set)
		want   error
	}{
		{"no ca.crt", func(t *testing.T, dir string, _ *Set) {
			must(t, os.Remove(filepath.Join(dir, CACertFile)))
		}, fs.ErrNotExist},
		{"node key missing", func(t *testing.T, dir string, _ *Set) {
			must(t, os.Remove(filepath.Join(dir, "nodes", "n1.key")))
		}, fs.ErrNotExist},
		{"node signed by another CA", func(t *testing.T, dir string, _ *Set) {
			other := newTestCA(t)
			b, err := other.IssueNode("n1", nil, time.Hour)
			must(t, err)
			k, _ := b.KeyPEM()
			must(t, os.WriteFile(filepath.Join(dir, "nodes", "n1.crt"), b.CertPEM(), 0o644))
			must(t, os.WriteFile(filepath.Join(dir, "nodes", "n1.key"), k, 0o600))
		}, ErrNotSignedByCA},
		{"key of another node", func(t *testing.T, dir string, s *Set) {
			k, _ := s.Nodes["n2"].KeyPEM()
			must(t, os.WriteFile(filepath.Join(dir, "nodes", "n1.key"), k, 0o600))
		}, ErrKeyMismatch},
		{"file name and identity differ", func(t *testing.T, dir string, _ *Set) {
			must(t, os.Rename(filepath.Join(dir, "nodes", "n1.crt"), filepath.Join(dir, "nodes", "n7.crt")))
			must(t, os.Rename(filepath.Join(dir, "nodes", "n1.key"), filepath.Join(dir, "nodes", "n7.key")))
		}, ErrNoIdentity},
		{"client in nodes", func(t *testing.T, dir string, _ *Set) {
			must(t, os.Rename(filepath.Join(dir, "clients", "cli.crt"), filepath.Join(dir, "nodes", "cli.crt")))
			must(t, os.Rename(filepath.Join(dir, "clients", "cli.key"), filepath.Join(dir, "nodes", "cli.key")))
		}, ErrNoIdentity},
		{"CA key of another CA", func(t *testing.T, dir string, _ *Set) {
			other := newTestCA(t)
			k, _ := other.KeyPEM()
			must(t, os.WriteFile(filepath.Join(dir, CAKeyFile), k, 0o600))
		}, ErrKeyMismatch},
		{"garbage certificate", func(t *testing.T, dir string, _ *Set) {
			must(t, os.WriteFile(filepath.Join(dir, "nodes", "n2.crt"), []byte("nope"), 0o644))
		}, ErrInvalidPEM},
		{"bad file name", func(t *testing.T, dir string, _ *Set) {
			must(t, os.WriteFile(filepath.Join(dir, "nodes", "a b.crt"), []byte("x"), 0o644))
		}, ErrInvalidNodeID},
	}
	for _, s := range steps {
		set := testSet(t)
		dir := t.TempDir()
		must(t, set.WriteDir(dir))
		s.tamper(t, dir, set)
		if _, err := LoadDir(dir); !errors.Is(err, s.want) {
			t.Errorf("%s: LoadDir = %v, want %v", s.name, err, s.want)
		}
	}
}

func TestWriteDirRefusesMislabelledBundles(t *testing.T) {
	s := testSet(t)
	s.Nodes["n9"] = s.Nodes["n1"]
	if err := s.WriteDir(t.TempDir()); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("WriteDir with nodes[n9] holding n1 = %v, want ErrNoIdentity", err)
	}
	s = testSet(t)
	s.Nodes["n1"] = &Bundle{Cert: s.Nodes["n1"].Cert, Key: s.Nodes["n2"].Key}
	if err := s.WriteDir(t.TempDir()); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("WriteDir with a mismatched key = %v, want ErrKeyMismatch", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
