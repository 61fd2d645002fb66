package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/node"
	"github.com/quotamesh/quotamesh/window"
)

// serveOptions is everything `quotamesh serve` can be told, from a YAML file
// (the yaml names), QUOTAMESH_* environment variables and flags (the flag
// names). Later sources win: defaults, then the file, then the environment,
// then the command line.
type serveOptions struct {
	ID          string   `yaml:"id" flag:"id" usage:"this node's ID (1 to 64 bytes of [A-Za-z0-9._-]); must match its certificate"`
	ClusterID   string   `yaml:"cluster_id" flag:"cluster-id" usage:"the cluster's name; nodes of another cluster are refused"`
	Listen      string   `yaml:"listen" flag:"listen" usage:"UDP host:port for QUIC, peers and clients alike"`
	Advertise   string   `yaml:"advertise" flag:"advertise" usage:"host:port peers reach this node at (default: listen, if it names a host)"`
	AdminListen string   `yaml:"admin_listen" flag:"admin-listen" usage:"HTTP host:port for /metrics /healthz /readyz /status /debug/pprof; empty turns it off"`
	RLSListen   string   `yaml:"rls_listen" flag:"rls-listen" usage:"TCP host:port for Envoy's rate limit service (gRPC, RLS v3, TLS as the client port); empty turns it off"`
	HTTPListen  string   `yaml:"http_listen" flag:"http-listen" usage:"TCP host:port for the HTTP decision API (POST /v1/allow, TLS as the client port); empty turns it off"`
	DataDir     string   `yaml:"data_dir" flag:"data-dir" usage:"directory for the Raft log and snapshots"`
	Certs       string   `yaml:"certs" flag:"certs" usage:"certificates directory in the layout of 'quotamesh certs init' (ca.crt, nodes/<id>.crt and .key)"`
	Bootstrap   []string `yaml:"bootstrap" flag:"bootstrap" usage:"initial voters as id=host:port, the same list on every initial node (empty: join a cluster)"`
	Join        []string `yaml:"join" flag:"join" usage:"host:port of members to join through"`

	Policy           string        `yaml:"policy" flag:"policy" usage:"partition policy: conservative (never above the limit) or available (each side serves)"`
	SyncInterval     time.Duration `yaml:"sync_interval" flag:"sync-interval" usage:"how often deltas go to peers and quotas are recomputed"`
	DeadAfter        time.Duration `yaml:"dead_after" flag:"dead-after" usage:"silence after which a member counts as unreachable"`
	FenceAfter       time.Duration `yaml:"fence_after" flag:"fence-after" usage:"time in a strict minority after which a node admits nothing (conservative)"`
	ReclaimAfter     time.Duration `yaml:"reclaim_after" flag:"reclaim-after" usage:"time after which a majority reclaims an unreachable member's share (conservative)"`
	MaxKeys          int           `yaml:"max_keys" flag:"max-keys" usage:"most keys this node tracks; beyond it new keys get the when-full answer"`
	UnknownKeys      string        `yaml:"unknown_keys" flag:"unknown-keys" usage:"answer for keys no limit matches: allow or deny"`
	WhenFull         string        `yaml:"when_full" flag:"when-full" usage:"answer for new keys while max-keys are tracked: allow or deny"`
	LeaseTTL         time.Duration `yaml:"lease_ttl" flag:"lease-ttl" usage:"how long an SDK may use a lease"`
	MaxLeaseFraction float64       `yaml:"max_lease_fraction" flag:"max-lease-fraction" usage:"largest lease, as a fraction of the key's limit"`
	MaxVoters        int           `yaml:"max_voters" flag:"max-voters" usage:"Raft voters (odd, 1 to 7); other members are non-voters"`

	RLSUnmatched     string `yaml:"rls_unmatched" flag:"rls-unmatched" usage:"RLS answer for descriptors no rule matches: ok or over_limit"`
	RLSLimitOverride string `yaml:"rls_limit_override" flag:"rls-limit-override" usage:"RLS requests carrying a limit override: ignore (the cluster's rule decides) or refuse (INVALID_ARGUMENT)"`
	GatewayRoute     string `yaml:"gateway_route" flag:"gateway-route" usage:"where the RLS and HTTP APIs decide: local (the node called) or home (the key's home node, one more hop)"`

	RequireClientCert bool     `yaml:"require_client_cert" flag:"require-client-cert" usage:"clients must present a certificate signed by the cluster CA"`
	AdminClients      []string `yaml:"admin_clients" flag:"admin-clients" usage:"client certificate names allowed to change limits when client certificates are required"`
	LeaveOnShutdown   bool     `yaml:"leave_on_shutdown" flag:"leave-on-shutdown" usage:"leave the cluster (Raft configuration) on SIGTERM instead of staying a member"`

	LogLevel  string `yaml:"log_level" flag:"log-level" usage:"trace, debug, info, warn or error"`
	LogFormat string `yaml:"log_format" flag:"log-format" usage:"json or console"`
}

// defaultServeOptions mirrors node.DefaultConfig.
func defaultServeOptions() serveOptions {
	d := node.DefaultConfig()
	return serveOptions{
		ClusterID: d.ClusterID, Listen: d.Listen, AdminListen: d.AdminListen, DataDir: "quotamesh-data",
		Policy: d.Policy.String(), SyncInterval: d.SyncInterval, DeadAfter: d.DeadAfter,
		FenceAfter: d.FenceAfter, ReclaimAfter: d.ReclaimAfter, MaxKeys: d.MaxKeys,
		UnknownKeys: "allow", WhenFull: "deny", LeaseTTL: d.LeaseTTL, MaxLeaseFraction: d.MaxLeaseFraction,
		MaxVoters: d.MaxVoters, AdminClients: d.TLS.AdminClients, LogLevel: d.LogLevel, LogFormat: "console",
		RLSUnmatched: "ok", RLSLimitOverride: "ignore", GatewayRoute: "local",
	}
}

// bindFlags defines one flag per field of o, with o's values as defaults.
func (o *serveOptions) bindFlags(fs *pflag.FlagSet) {
	v := reflect.ValueOf(o).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f, name, usage := v.Field(i), t.Field(i).Tag.Get("flag"), t.Field(i).Tag.Get("usage")
		switch p := f.Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, name, *p, usage)
		case *[]string:
			fs.StringSliceVar(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *float64:
			fs.Float64Var(p, name, *p, usage)
		case *bool:
			fs.BoolVar(p, name, *p, usage)
		default:
			panic(fmt.Sprintf("serveOptions.%s: unsupported type %T", t.Field(i).Name, p))
		}
	}
}

// overlay copies into o every field whose flag was set (on the command line
// or, through applyEnv, in the environment) from the flag-bound copy.
func (o *serveOptions) overlay(flagged *serveOptions, fs *pflag.FlagSet) {
	dst, src := reflect.ValueOf(o).Elem(), reflect.ValueOf(flagged).Elem()
	for i := range dst.NumField() {
		if f := fs.Lookup(dst.Type().Field(i).Tag.Get("flag")); f != nil && f.Changed {
			dst.Field(i).Set(src.Field(i))
		}
	}
}

// configFile is a loaded YAML file: where each top-level key is, so that
// errors found after decoding can name the line.
type configFile struct {
	path  string
	lines map[string]int
}

// errConfig marks an error in a configuration file.
var errConfig = errors.New("bad configuration")

// loadFile decodes the YAML file at path over o. Unknown keys, wrong types
// and malformed YAML are errors that name the file and line.
func loadFile(path string, o *serveOptions) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	cf := &configFile{path: path, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errConfig, path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return cf, nil // an empty file changes nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: %s:%d: the file must be a mapping of keys to values", errConfig, path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		cf.lines[root.Content[i].Value] = root.Content[i].Line
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(o); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(strings.TrimPrefix(msg, "unmarshal errors:\n  "), "\n  ", "; ")
		msg = strings.ReplaceAll(msg, "in type main.serveOptions", "(see 'quotamesh serve --help' for the keys)")
		// Name the key on the line the decoder complains about.
		var line int
		if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
			for key, l := range cf.lines {
				if l == line {
					msg = fmt.Sprintf("line %d: key %s: %s", line, key, strings.TrimSpace(strings.SplitN(msg, ":", 2)[1]))
					break
				}
			}
		}
		return nil, fmt.Errorf("%w: %s: %s", errConfig, path, msg)
	}
	return cf, nil
}

// at names where a key was set: "file:line: key" for a file key, "--flag" or
// the environment variable otherwise.
func (cf *configFile) at(key string, fs *pflag.FlagSet, flag string) string {
	if f := fs.Lookup(flag); f != nil && f.Changed {
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && v == f.Value.String() {
			return "environment variable " + env
		}
		return "--" + flag
	}
	if cf != nil {
		if line, ok := cf.lines[key]; ok {
			return fmt.Sprintf("%s:%d: %s", cf.path, line, key)
		}
	}
	return "--" + flag
}

// toNode turns the options into a node.Config, naming the source of any bad
// value.
func (o *serveOptions) toNode(cf *configFile, fs *pflag.FlagSet) (node.Config, error) {
	c := node.DefaultConfig()
	c.ID, c.ClusterID, c.Listen, c.Advertise = o.ID, o.ClusterID, o.Listen, o.Advertise
	c.AdminListen, c.DataDir, c.Join = o.AdminListen, o.DataDir, o.Join
	c.TLS.CertDir, c.TLS.RequireClientCert, c.TLS.AdminClients = o.Certs, o.RequireClientCert, o.AdminClients
	c.SyncInterval, c.DeadAfter, c.FenceAfter, c.ReclaimAfter = o.SyncInterval, o.DeadAfter, o.FenceAfter, o.ReclaimAfter
	c.MaxKeys, c.LeaseTTL, c.MaxLeaseFraction, c.MaxVoters = o.MaxKeys, o.LeaseTTL, o.MaxLeaseFraction, o.MaxVoters
	c.LeaveOnShutdown, c.LogLevel = o.LeaveOnShutdown, o.LogLevel
	var err error
	if c.Policy, err = share.ParsePolicy(o.Policy); err != nil {
		return c, fmt.Errorf("%w: %s: %v", errConfig, cf.at("policy", fs, "policy"), err)
	}
	for _, p := range []struct {
		key, flag, val string
		dst            *window.Policy
	}{{"unknown_keys", "unknown-keys", o.UnknownKeys, &c.UnknownKeys}, {"when_full", "when-full", o.WhenFull, &c.WhenFull}} {
		switch p.val {
		case "allow":
			*p.dst = window.PolicyAllow
		case "deny":
			*p.dst = window.PolicyDeny
		default:
			return c, fmt.Errorf("%w: %s: %q: use allow or deny", errConfig, cf.at(p.key, fs, p.flag), p.val)
		}
	}
	for _, b := range o.Bootstrap {
		id, addr, ok := strings.Cut(b, "=")
		if !ok || id == "" || addr == "" {
			return c, fmt.Errorf("%w: %s: %q: write each voter as id=host:port", errConfig, cf.at("bootstrap", fs, "bootstrap"), b)
		}
		c.Bootstrap = append(c.Bootstrap, node.Peer{ID: id, Addr: addr})
	}
	if err := o.gatewayOptions(&c, cf, fs); err != nil {
		return c, err
	}
	if !slices.Contains([]string{"json", "console"}, o.LogFormat) {
		return c, fmt.Errorf("%w: %s: %q: use json or console", errConfig, cf.at("log_format", fs, "log-format"), o.LogFormat)
	}
	if err := c.Validate(); err != nil {
		// node names the field; point at where the options came from too.
		src := "the command line"
		if cf != nil {
			src = cf.path + " and the command line"
		}
		return c, fmt.Errorf("%w: %v (from %s)", errConfig, err, src)
	}
	return c, nil
}
