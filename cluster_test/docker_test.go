//go:build fault

package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dockerBackend runs node i as container <tag>-<i> of an image built FROM
// scratch with deploy/docker/Dockerfile, on a user-defined bridge network
// (10.78.0.0/24), with its data on the named volume <tag>-<i>: kill -9 is
// `docker kill -s KILL`, restart is a new container on the same volume,
// pause is `docker pause` (SIGSTOP of the node's process where the daemon
// cannot freeze). Partitions and loss are iptables rules in the
// container's network namespace (`nsenter -t PID -n`), delay is faultnet.
type dockerBackend struct {
	tag     string
	image   string
	network bool
	ips     []string
	volumes []string
	ctxDir  string
	stopped map[int]bool // paused with SIGSTOP because docker pause failed
}

const dockerSubnet = "10.78.0"

func dockerAvailable() error {
	for _, tool := range []string{"docker", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: docker: %s not found: %v", errNoBackend, tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Errorf("%w: docker: daemon: %v: %s", errNoBackend, err, bytes.TrimSpace(out))
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: docker: nsenter needs root", errNoBackend)
	}
	return nil
}

func newDockerBackend() *dockerBackend {
	tag := fmt.Sprintf("qfd%04x", uint16(time.Now().UnixNano()>>10))
	return &dockerBackend{tag: tag, image: "quotamesh-fault:" + tag, stopped: map[int]bool{}}
}

func (*dockerBackend) Name() string { return "docker" }

func (b *dockerBackend) container(i int) string { return fmt.Sprintf("%s-%d", b.tag, i) }

// Setup builds the image from the suite's binary and creates the network
// and one volume per node.
func (b *dockerBackend) Setup(n int) ([]string, error) {
	dir, err := os.MkdirTemp(suite.workDir, "image-")
	if err != nil {
		return nil, fmt.Errorf("image context: %w", err)
	}
	b.ctxDir = dir
	for _, f := range []struct{ src, dst string }{{suite.bin, "quotamesh"}, {filepath.Join(repoRoot(), "deploy", "docker", "Dockerfile"), "Dockerfile"}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, fmt.Errorf("image context: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.dst), data, 0o755); err != nil {
			return nil, fmt.Errorf("image context: %w", err)
		}
	}
	if err := sh("docker", "build", "-q", "-t", b.image, dir); err != nil {
		return nil, err
	}
	if err := sh("docker", "network", "create", "--driver", "bridge", "--subnet", dockerSubnet+".0/24", b.tag); err != nil {
		return nil, err
	}
	b.network = true
	for i := range n {
		b.ips = append(b.ips, fmt.Sprintf("%s.%d", dockerSubnet, 11+i))
		if err := sh("docker", "volume", "create", b.container(i)); err != nil {
			return nil, err
		}
		b.volumes = append(b.volumes, b.container(i))
	}
	return b.ips, nil
}

// Command runs the node in a container in the foreground (so that the
// cluster's monitor sees it exit), mapping the data and certificates
// directories to the volume and a read-only bind mount.
func (b *dockerBackend) Command(i int, argv []string) *exec.Cmd {
	args := []string{"run", "--rm", "--name", b.container(i), "--network", b.tag, "--ip", b.ips[i],
		"-v", b.volumes[i] + ":/data"}
	var rest []string
	for k := 1; k < len(argv); k++ {
		switch argv[k] {
		case "--data-dir":
			rest = append(rest, argv[k], "/data")
			k++
		case "--certs":
			args = append(args, "-v", argv[k+1]+":/certs:ro")
			rest = append(rest, argv[k], "/certs")
			k++
		default:
			rest = append(rest, argv[k])
		}
	}
	args = append(append(args, b.image), rest...)
	return exec.Command("docker", args...)
}

// Signal replaces signals to the docker CLI with docker's own commands.
func (b *dockerBackend) Signal(i int, sig syscall.Signal) error {
	switch sig {
	case syscall.SIGKILL:
		if err := sh("docker", "kill", "-s", "KILL", b.container(i)); err != nil {
			return err
		}
		// --rm removes it, but perhaps not before the restart wants the
		// name: remove it now (an error means it is gone already).
		_ = exec.Command("docker", "rm", "-f", b.container(i)).Run()
		return nil
	case syscall.SIGSTOP:
		// docker pause needs the cgroup freezer, which a Docker daemon
		// running inside a container may lack: then stop the node's
		// process itself, which is what a pause is for the node.
		if err := sh("docker", "pause", b.container(i)); err != nil {
			if serr := b.signalPid(i, syscall.SIGSTOP); serr != nil {
				return errors.Join(err, serr)
			}
			b.stopped[i] = true
		}
		return nil
	case syscall.SIGCONT:
		if b.stopped[i] {
			delete(b.stopped, i)
			return b.signalPid(i, syscall.SIGCONT)
		}
		return sh("docker", "unpause", b.container(i))
	default:
		return sh("docker", "kill", "-s", strconv.Itoa(int(sig)), b.container(i))
	}
}

// pid returns the host process ID of container i's node.
func (b *dockerBackend) pid(i int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{.State.Pid}}", b.container(i)).Output()
	if err != nil {
		return 0, fmt.Errorf("docker inspect %s: %w", b.container(i), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("docker inspect %s: pid %q: not running", b.container(i), strings.TrimSpace(string(out)))
	}
	return pid, nil
}

func (b *dockerBackend) signalPid(i int, sig syscall.Signal) error {
	pid, err := b.pid(i)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("%s: signal %v to pid %d: %w", b.container(i), sig, pid, err)
	}
	return nil
}

func (b *dockerBackend) ipt(i int, args ...string) error {
	pid, err := b.pid(i)
	if err != nil {
		return err
	}
	return sh(append([]string{"nsenter", "-t", strconv.Itoa(pid), "-n", "iptables"}, args...)...)
}

func (b *dockerBackend) Cut(c *Cluster, x, y int) error { return iptablesCut(b.ipt, c, x, y) }

func (b *dockerBackend) CutOneWay(c *Cluster, x, y int) error {
	return iptablesCutOneWay(b.ipt, c, x, y)
}

// Wipe empties node i's data volume (its container is gone: killed and
// removed): a replaced host keeping its name.
func (b *dockerBackend) Wipe(i int) error {
	if err := sh("docker", "volume", "rm", "-f", b.volumes[i]); err != nil {
		return err
	}
	return sh("docker", "volume", "create", b.volumes[i])
}

func (b *dockerBackend) Loss(c *Cluster, i int, p float64) error { return iptablesLoss(b.ipt, c, i, p) }

func (b *dockerBackend) Heal(c *Cluster) error {
	var errs []error
	for i, n := range c.nodes {
		if n.Running() {
			errs = append(errs, b.ipt(i, "-F"))
		}
	}
	return errors.Join(errs...)
}

// Close removes the containers, volumes, network and image.
func (b *dockerBackend) Close() error {
	var errs []error
	for i := range b.ips {
		_ = exec.Command("docker", "rm", "-f", b.container(i)).Run() // gone already unless a run failed
	}
	for _, v := range b.volumes {
		errs = append(errs, sh("docker", "volume", "rm", "-f", v))
	}
	b.volumes = nil
	if b.network {
		errs = append(errs, sh("docker", "network", "rm", b.tag))
		b.network = false
	}
	errs = append(errs, sh("docker", "image", "rm", "-f", b.image))
	return errors.Join(errs...)
}
