//go:build docker

// Package docker_test brings up deploy/docker/docker-compose.yml: it builds
// the static binary and the FROM scratch image, starts a 3-node cluster
// with docker-compose, sets a limit with the CLI from the host through the
// published port, checks the cluster's status from inside the network, and
// always tears everything down. Run it with
//
//	go test -tags docker ./deploy/...
//
// It skips when docker or docker-compose is missing or the daemon does not
// answer.
package docker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// status is the part of the node status document the test reads.
type status struct {
	Node    string `json:"node"`
	Ready   bool   `json:"ready"`
	Members []struct {
		ID string `json:"id"`
	} `json:"members"`
	Raft struct {
		Leader string `json:"leader"`
		Rules  int    `json:"rules"`
	} `json:"raft"`
}

func TestCompose(t *testing.T) {
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: skipping the docker-compose test", tool)
		}
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("the docker daemon does not answer (%v: %s): skipping the docker-compose test", err, bytes.TrimSpace(out))
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(here, "..", "..")
	project := fmt.Sprintf("qmtest%d", time.Now().UnixNano()%1_000_000_000)
	image := "quotamesh:" + project
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	sh := func(dir string, env []string, name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(dir string, env []string, name string, args ...string) string {
		t.Helper()
		out, err := sh(dir, env, name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}

	// The binary, as the Dockerfile says, and the image.
	bin := filepath.Join(here, "quotamesh")
	must(root, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", bin, "./cmd/quotamesh")
	must(here, nil, "docker", "build", "-q", "-t", image, here)
	t.Cleanup(func() { _, _ = exec.Command("docker", "rmi", "-f", image).CombinedOutput() })

	certDir := filepath.Join(t.TempDir(), "certs")
	must(here, nil, bin, "certs", "init", "--dir", certDir, "--nodes", "n1,n2,n3", "--hosts", "n1,n2,n3,localhost,127.0.0.1")

	env := []string{"QM_IMAGE=" + image, "QM_CERTS=" + certDir, "QM_N1_QUIC=127.0.0.1:", "QM_N1_ADMIN=127.0.0.1:"}
	compose := func(args ...string) (string, error) {
		return sh(here, env, "docker-compose", append([]string{"-p", project, "-f", "docker-compose.yml"}, args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose("logs", "--no-color", "--tail", "40")
			t.Logf("logs:\n%s", out)
		}
		// A fresh context: the test's may have ended.
		cmd := exec.Command("docker-compose", "-p", project, "-f", "docker-compose.yml", "down", "-v", "--remove-orphans", "-t", "5")
		cmd.Dir, cmd.Env = here, append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
	})
	if out, err := compose("up", "-d"); err != nil {
		t.Fatalf("docker-compose up: %v\n%s", err, out)
	}

	// Ready: n1 answers, knows a leader, and has three members.
	nodeStatus := func() (status, error) {
		out, err := compose("exec", "-T", "n1", "/quotamesh", "status", "--addr", "n1:7946", "--certs", "/certs", "--json", "--timeout", "5s")
		var st status
		if err != nil {
			return st, fmt.Errorf("%v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return st, fmt.Errorf("%v: %s", err, out)
		}
		return st, nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := nodeStatus()
		if err == nil && st.Ready && len(st.Members) == 3 && st.Raft.Leader != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster was not ready within 2 minutes: last status %+v, %v", st, err)
		}
		time.Sleep(time.Second)
	}

	// A limit, with the CLI on the host, through n1's published port.
	addr := strings.TrimSpace(must(here, env, "docker-compose", "-p", project, "-f", "docker-compose.yml", "port", "--protocol=udp", "n1", "7946"))
	out := must(here, nil, bin, "limit", "set", "orders.create", "1000/s", "--addr", addr, "--certs", certDir, "--timeout", "30s")
	if !strings.Contains(out, "orders.create 1000/s set") {
		t.Errorf("limit set: %q", out)
	}
	// Every node applies it: ask n3, from inside the network.
	out, err = compose("exec", "-T", "n1", "/quotamesh", "limit", "get", "orders.create", "--addr", "n3:7946", "--certs", "/certs")
	if err != nil || strings.TrimSpace(out) != "orders.create 1000/s" {
		t.Errorf("limit get on n3: %v, %q; want orders.create 1000/s", err, out)
	}

	out, err = compose("exec", "-T", "n1", "/quotamesh", "status", "--addr", "n1:7946", "--certs", "/certs")
	if err != nil || !strings.Contains(out, "3 members") || !strings.Contains(out, "1 limit rule,") {
		t.Errorf("status: %v\n%s\nwant 3 members and 1 limit rule", err, out)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if !strings.Contains(out, id+":7946") {
			t.Errorf("status does not list %s:7946:\n%s", id, out)
		}
	}
	t.Logf("status:\n%s", out)
}
