// Package serveconfig is the configuration of `quotamesh serve`: the options
// (flags, QUOTAMESH_* environment variables and a YAML file, each key
// documented once in a struct tag), their defaults, the checks that name the
// key, file line or flag of a bad value, and the reference file
// `serve --print-config` writes.
package serveconfig

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
	"github.com/quotamesh/quotamesh/transport"
	"github.com/quotamesh/quotamesh/window"
)

// EnvPrefix is the prefix of environment variables that set flags:
// QUOTAMESH_SYNC_INTERVAL sets --sync-interval.
const EnvPrefix = "QUOTAMESH_"

// Log formats (log_format, --log-format).
const (
	LogAuto    = "auto"    // console on a terminal, JSON otherwise
	LogJSON    = "json"    // one JSON object per line
	LogConsole = "console" // for people: colours, aligned fields
)

// Options is everything `quotamesh serve` can be told, from a YAML file
// (the yaml names), QUOTAMESH_* environment variables and flags (the flag
// names). Later sources win: defaults, then the file, then the environment,
// then the command line.
type Options struct {
	ID          string   `yaml:"id" flag:"id" usage:"this node's ID (1 to 64 bytes of [A-Za-z0-9._-]); must match its certificate"`
	ClusterID   string   `yaml:"cluster_id" flag:"cluster-id" usage:"the cluster's name; nodes of another cluster are refused"`
	Listen      string   `yaml:"listen" flag:"listen" usage:"UDP host:port for QUIC, peers and clients alike (loopback by default: name the interface other hosts reach)"`
	Advertise   string   `yaml:"advertise" flag:"advertise" usage:"host:port peers reach this node at (default: listen, if it names a host)"`
	AdminListen string   `yaml:"admin_listen" flag:"admin-listen" usage:"HTTP host:port for /metrics /healthz /readyz /status /debug/pprof; empty turns it off"`
	RLSListen   string   `yaml:"rls_listen" flag:"rls-listen" usage:"TCP host:port for Envoy's rate limit service (gRPC, RLS v3, TLS as the client port); empty turns it off"`
	HTTPListen  string   `yaml:"http_listen" flag:"http-listen" usage:"TCP host:port for the HTTP decision API (POST /v1/allow, TLS as the client port); empty turns it off"`
	DataDir     string   `yaml:"data_dir" flag:"data-dir" usage:"directory for the Raft log and snapshots"`
	Certs       string   `yaml:"certs" flag:"certs" usage:"certificates directory in the layout of 'quotamesh certs init' (ca.crt, nodes/<id>.crt and .key)"`
	Bootstrap   []string `yaml:"bootstrap" flag:"bootstrap" usage:"initial members as id=host:port, the same list in the same order on every initial node; the first max-voters vote, the others start as non-voters (empty: join a cluster)"`
	Join        []string `yaml:"join" flag:"join" usage:"host:port of members to join through"`

	Policy           string        `yaml:"policy" flag:"policy" usage:"partition policy: conservative (never above the limit) or available (each side serves)"`
	SyncInterval     time.Duration `yaml:"sync_interval" flag:"sync-interval" usage:"how often deltas go to peers and quotas are recomputed; 1ms to 4s, and at most dead-after/4"`
	DeadAfter        time.Duration `yaml:"dead_after" flag:"dead-after" usage:"silence after which a member counts as unreachable; at least 4 × sync-interval, at most fence-after"`
	FenceAfter       time.Duration `yaml:"fence_after" flag:"fence-after" usage:"time in a strict minority after which a node admits nothing (conservative); at least dead-after"`
	ReclaimAfter     time.Duration `yaml:"reclaim_after" flag:"reclaim-after" usage:"time after which a majority reclaims an unreachable member's share (conservative); at least fence-after + dead-after"`
	MaxKeys          int           `yaml:"max_keys" flag:"max-keys" usage:"most keys this node tracks; beyond it new keys get the when-full answer"`
	UnknownKeys      string        `yaml:"unknown_keys" flag:"unknown-keys" usage:"answer for keys no limit matches: allow or deny"`
	WhenFull         string        `yaml:"when_full" flag:"when-full" usage:"answer for new keys while max-keys are tracked: allow or deny"`
	LeaseTTL         time.Duration `yaml:"lease_ttl" flag:"lease-ttl" usage:"the longest an SDK may use a lease; 1ms to 10s"`
	MaxLeaseFraction float64       `yaml:"max_lease_fraction" flag:"max-lease-fraction" usage:"largest lease, as a fraction of the key's limit"`
	ClientMaxWait    time.Duration `yaml:"client_max_wait" flag:"client-max-wait" usage:"longest a batch of client requests may wait in the node before it is answered overloaded without deciding; 1ms to 1m, negative turns it off"`
	MaxVoters        int           `yaml:"max_voters" flag:"max-voters" usage:"Raft voters (odd, 1 to 7); other members are non-voters"`

	AllowAnonymousClients bool    `yaml:"allow_anonymous_clients" flag:"allow-anonymous-clients" usage:"INSECURE: clients without a certificate may ask for decisions (never read or change anything); logged at start and shown in /status"`
	MaxClientConns        int     `yaml:"max_client_conns" flag:"max-client-conns" usage:"most client connections open at once (about 70 KB each)"`
	HandshakeRate         float64 `yaml:"handshake_rate" flag:"handshake-rate" usage:"connection attempts per second one source address may make (peers and clients)"`
	HandshakeBurst        int     `yaml:"handshake_burst" flag:"handshake-burst" usage:"connection attempts one source address may make at once beyond the rate"`
	LeaveOnShutdown       bool    `yaml:"leave_on_shutdown" flag:"leave-on-shutdown" usage:"leave the cluster (Raft configuration) on SIGTERM instead of staying a member"`
	Pprof                 bool    `yaml:"pprof" flag:"pprof" usage:"serve /debug/pprof on the admin listener (profiles show memory contents to whoever reaches it)"`
	RLSUnmatched          string  `yaml:"rls_unmatched" flag:"rls-unmatched" usage:"RLS answer for descriptors no rule matches: ok or over_limit"`
	RLSLimitOverride      string  `yaml:"rls_limit_override" flag:"rls-limit-override" usage:"RLS requests carrying a limit override: ignore (the cluster's rule decides) or refuse (INVALID_ARGUMENT)"`
	GatewayRoute          string  `yaml:"gateway_route" flag:"gateway-route" usage:"where the RLS and HTTP APIs decide: thin (a key whose limit and demand are thin over the nodes at its home node, one more hop; any other on the node called), local (always the node called) or home (always the key's home node)"`

	LogLevel  string `yaml:"log_level" flag:"log-level" usage:"trace, debug, info, warn or error"`
	LogFormat string `yaml:"log_format" flag:"log-format" usage:"auto (console on a terminal, json otherwise), json or console"`
}

// removedKeys are configuration keys of earlier versions, with what replaced
// them, so that an old file fails with advice rather than "unknown field".
var removedKeys = map[string]string{
	"admin_clients":       "the role is in the client certificate now: issue the operator's with 'quotamesh certs issue --client NAME --role admin'",
	"require_client_cert": "client certificates are required by default now; allow_anonymous_clients is the (insecure) opt-out",
}

// Defaults are the options' defaults; they mirror node.DefaultConfig.
func Defaults() Options {
	d := node.DefaultConfig()
	return Options{
		ClusterID: d.ClusterID, Listen: d.Listen, AdminListen: d.AdminListen, DataDir: "quotamesh-data",
		Policy: d.Policy.String(), SyncInterval: d.SyncInterval, DeadAfter: d.DeadAfter,
		FenceAfter: d.FenceAfter, ReclaimAfter: d.ReclaimAfter, MaxKeys: d.MaxKeys,
		UnknownKeys: "allow", WhenFull: "deny", LeaseTTL: d.LeaseTTL, MaxLeaseFraction: d.MaxLeaseFraction,
		MaxVoters: d.MaxVoters, ClientMaxWait: d.ClientMaxWait, LogLevel: d.LogLevel, LogFormat: LogAuto, Pprof: !d.DisablePprof,
		MaxClientConns: transport.DefaultMaxClientConns, HandshakeRate: transport.DefaultHandshakeRate,
		HandshakeBurst: transport.DefaultHandshakeBurst,
		RLSUnmatched:   "ok", RLSLimitOverride: "ignore", GatewayRoute: "thin",
	}
}

// BindFlags defines one flag per field of o, with o's values as defaults.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
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
			panic(fmt.Sprintf("Options.%s: unsupported type %T", t.Field(i).Name, p))
		}
	}
}

// Overlay copies into o every field whose flag was set (on the command line
// or, through applyEnv, in the environment) from the flag-bound copy.
func (o *Options) Overlay(flagged *Options, fs *pflag.FlagSet) {
	dst, src := reflect.ValueOf(o).Elem(), reflect.ValueOf(flagged).Elem()
	for i := range dst.NumField() {
		if f := fs.Lookup(dst.Type().Field(i).Tag.Get("flag")); f != nil && f.Changed {
			dst.Field(i).Set(src.Field(i))
		}
	}
}

// File is a loaded YAML file: where each top-level key is, so that
// errors found after decoding can name the line.
type File struct {
	path  string
	lines map[string]int
}

// ErrConfig marks an error in a configuration file.
var ErrConfig = errors.New("bad configuration")

// Load decodes the YAML file at path over o. Unknown keys, wrong types
// and malformed YAML are errors that name the file and line.
func Load(path string, o *Options) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	cf := &File{path: path, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return cf, nil // an empty file changes nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: %s:%d: the file must be a mapping of keys to values", ErrConfig, path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, line := root.Content[i].Value, root.Content[i].Line
		if why, ok := removedKeys[key]; ok {
			return nil, fmt.Errorf("%w: %s:%d: key %s was removed: %s", ErrConfig, path, line, key, why)
		}
		cf.lines[key] = line
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(o); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(strings.TrimPrefix(msg, "unmarshal errors:\n  "), "\n  ", "; ")
		msg = strings.ReplaceAll(msg, "in type serveconfig.Options", "(see 'quotamesh serve --help' for the keys)")
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
		return nil, fmt.Errorf("%w: %s: %s", ErrConfig, path, msg)
	}
	return cf, nil
}

// At names where a key was set: "file:line: key" for a file key, "--flag" or
// the environment variable otherwise.
func (cf *File) At(key string, fs *pflag.FlagSet, flag string) string {
	if f := fs.Lookup(flag); f != nil && f.Changed {
		env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
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

// checkNumbers refuses negative durations and counts, naming the key and
// where it was set: node.Config reads zero as "the default" and would name
// its own field.
func (o *Options) checkNumbers(cf *File, fs *pflag.FlagSet) error {
	v := reflect.ValueOf(o).Elem()
	t := v.Type()
	for i := range t.NumField() {
		key, flag := t.Field(i).Tag.Get("yaml"), t.Field(i).Tag.Get("flag")
		f := v.Field(i)
		switch x := f.Interface().(type) {
		case time.Duration:
			if x <= 0 {
				return fmt.Errorf("%w: %s: %v: use a positive duration (e.g. %v)", ErrConfig, cf.At(key, fs, flag), x, durationDefault(key))
			}
		case int:
			if x <= 0 {
				return fmt.Errorf("%w: %s: %d: use a positive number", ErrConfig, cf.At(key, fs, flag), x)
			}
		case float64:
			if !(x > 0) {
				return fmt.Errorf("%w: %s: %v: use a positive number", ErrConfig, cf.At(key, fs, flag), x)
			}
		}
	}
	return nil
}

// checkTimings refuses timings whose valid range depends on each other,
// naming both settings and where each came from (the node's own checks say
// the same in its field names).
func (o *Options) checkTimings(cf *File, fs *pflag.FlagSet) error {
	at := func(key string) string { return cf.At(key, fs, strings.ReplaceAll(key, "_", "-")) }
	switch {
	case o.SyncInterval < time.Millisecond || o.SyncInterval > 4*time.Second:
		return fmt.Errorf("%w: %s: %v: use 1ms to 4s (a silent peer's counts are trusted for two sync intervals plus 50ms, at most 10s)", ErrConfig, at("sync_interval"), o.SyncInterval)
	case o.DeadAfter < 4*o.SyncInterval:
		return fmt.Errorf("%w: %s %v is below 4 × %s %v: a member would count as unreachable between two of its frames", ErrConfig, at("dead_after"), o.DeadAfter, at("sync_interval"), o.SyncInterval)
	case o.FenceAfter < o.DeadAfter:
		return fmt.Errorf("%w: %s %v is below %s %v: a node would fence itself before it could tell a peer is gone", ErrConfig, at("fence_after"), o.FenceAfter, at("dead_after"), o.DeadAfter)
	case o.ReclaimAfter < o.FenceAfter+o.DeadAfter:
		return fmt.Errorf("%w: %s %v is below %s %v + %s %v: a fenced minority and the reclaiming majority could both admit", ErrConfig, at("reclaim_after"), o.ReclaimAfter, at("fence_after"), o.FenceAfter, at("dead_after"), o.DeadAfter)
	case o.LeaseTTL < time.Millisecond || o.LeaseTTL > 10*time.Second:
		return fmt.Errorf("%w: %s: %v: use 1ms to 10s", ErrConfig, at("lease_ttl"), o.LeaseTTL)
	case o.ClientMaxWait >= 0 && (o.ClientMaxWait < time.Millisecond || o.ClientMaxWait > time.Minute):
		return fmt.Errorf("%w: %s: %v: use 1ms to 1m, or a negative duration to turn it off", ErrConfig, at("client_max_wait"), o.ClientMaxWait)
	}
	return nil
}

// durationDefault is the default of a duration key, for error messages.
func durationDefault(key string) time.Duration {
	d := reflect.ValueOf(Defaults())
	for i := range d.NumField() {
		if d.Type().Field(i).Tag.Get("yaml") == key {
			if v, ok := d.Field(i).Interface().(time.Duration); ok {
				return v
			}
		}
	}
	return 0
}

// ToNode turns the options into a node.Config, naming the source of any bad
// value.
func (o *Options) ToNode(cf *File, fs *pflag.FlagSet) (node.Config, error) {
	c := node.DefaultConfig()
	c.ID, c.ClusterID, c.Listen, c.Advertise = o.ID, o.ClusterID, o.Listen, o.Advertise
	c.AdminListen, c.DataDir, c.Join = o.AdminListen, o.DataDir, o.Join
	c.TLS.CertDir = o.Certs
	c.Clients = transport.ClientPolicy{AllowAnonymous: o.AllowAnonymousClients, MaxClientConns: o.MaxClientConns,
		HandshakeRate: o.HandshakeRate, HandshakeBurst: o.HandshakeBurst}
	c.DisablePprof = !o.Pprof
	c.SyncInterval, c.DeadAfter, c.FenceAfter, c.ReclaimAfter = o.SyncInterval, o.DeadAfter, o.FenceAfter, o.ReclaimAfter
	c.MaxKeys, c.LeaseTTL, c.MaxLeaseFraction, c.MaxVoters = o.MaxKeys, o.LeaseTTL, o.MaxLeaseFraction, o.MaxVoters
	c.LeaveOnShutdown, c.LogLevel = o.LeaveOnShutdown, o.LogLevel
	c.ClientMaxWait = o.ClientMaxWait
	// Values node.Config would read as "the default": given explicitly,
	// they are mistakes.
	for _, e := range []struct {
		key, flag string
		empty     bool
	}{{"cluster_id", "cluster-id", o.ClusterID == ""}, {"listen", "listen", o.Listen == ""}, {"data_dir", "data-dir", o.DataDir == ""}, {"certs", "certs", o.Certs == ""}, {"id", "id", o.ID == ""}} {
		if e.empty {
			return c, fmt.Errorf("%w: %s: empty; give a value (see 'quotamesh serve --help')", ErrConfig, cf.At(e.key, fs, e.flag))
		}
	}
	if err := o.checkNumbers(cf, fs); err != nil {
		return c, err
	}
	if err := o.checkTimings(cf, fs); err != nil {
		return c, err
	}
	var err error
	if c.Policy, err = share.ParsePolicy(o.Policy); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrConfig, cf.At("policy", fs, "policy"), err)
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
			return c, fmt.Errorf("%w: %s: %q: use allow or deny", ErrConfig, cf.At(p.key, fs, p.flag), p.val)
		}
	}
	for _, b := range o.Bootstrap {
		id, addr, ok := strings.Cut(b, "=")
		if !ok || id == "" || addr == "" {
			return c, fmt.Errorf("%w: %s: %q: write each member as id=host:port", ErrConfig, cf.At("bootstrap", fs, "bootstrap"), b)
		}
		c.Bootstrap = append(c.Bootstrap, node.Peer{ID: id, Addr: addr})
	}
	if err := o.gatewayOptions(&c, cf, fs); err != nil {
		return c, err
	}
	if !slices.Contains([]string{LogAuto, LogJSON, LogConsole}, o.LogFormat) {
		return c, fmt.Errorf("%w: %s: %q: use auto, json or console", ErrConfig, cf.At("log_format", fs, "log-format"), o.LogFormat)
	}
	if err := c.Validate(); err != nil {
		// node names the field; point at where the options came from too.
		src := "the command line"
		if cf != nil {
			src = cf.path + " and the command line"
		}
		return c, fmt.Errorf("%w: %v (from %s)", ErrConfig, err, src)
	}
	return c, nil
}

// Resolve merges the defaults, the file at path (none if empty) and the
// flags set in fs (bound to flagged) into a node configuration, and says
// the log format.
func Resolve(path string, flagged *Options, fs *pflag.FlagSet) (node.Config, string, error) {
	opts := Defaults()
	var cf *File
	if path != "" {
		var err error
		if cf, err = Load(path, &opts); err != nil {
			return node.Config{}, "", err
		}
	}
	opts.Overlay(flagged, fs)
	cfg, err := opts.ToNode(cf, fs)
	return cfg, opts.LogFormat, err
}

// gatewayOptions sets the decision APIs' part of c from o.
func (o *Options) gatewayOptions(c *node.Config, cf *File, fs *pflag.FlagSet) error {
	c.Gateway.RLSListen, c.Gateway.HTTPListen = o.RLSListen, o.HTTPListen
	var err error
	if c.Gateway.RLSUnmatchedOverLimit, err = either(o.RLSUnmatched, "ok", "over_limit", cf.At("rls_unmatched", fs, "rls-unmatched")); err != nil {
		return err
	}
	if c.Gateway.RLSRefuseOverride, err = either(o.RLSLimitOverride, "ignore", "refuse", cf.At("rls_limit_override", fs, "rls-limit-override")); err != nil {
		return err
	}
	switch r := node.GatewayRoute(o.GatewayRoute); r {
	case node.RouteThin, node.RouteLocal, node.RouteHome:
		c.Gateway.Route = r
	default:
		return fmt.Errorf("%w: %s: %q: use thin, local or home", ErrConfig, cf.At("gateway_route", fs, "gateway-route"), o.GatewayRoute)
	}
	return nil
}

// either reads a two-valued option: false for no, true for yes; where
// names the option's source for the error.
func either(v, no, yes, where string) (bool, error) {
	switch v {
	case no:
		return false, nil
	case yes:
		return true, nil
	}
	return false, fmt.Errorf("%w: %s: %q: use %s or %s", ErrConfig, where, v, no, yes)
}
