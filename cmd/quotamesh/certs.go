package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/certs"
)

// Default validities: short for what the nodes and clients hold, so that a
// stolen key is not good for long (nodes reload certificates on SIGHUP and
// export their expiry as quotamesh_cert_expiry_timestamp_seconds), long for
// the CA, whose key stays offline.
const (
	defaultValidity   = 90 * 24 * time.Hour
	defaultCAValidity = 5 * 365 * 24 * time.Hour
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make and inspect cluster certificates",
		Long: `certs makes a cluster CA and the certificates it signs (init), issues one
more from an existing CA (issue), and shows what a certificate file holds
(show). Every client certificate carries a role: admin (may change limits
and membership) or decide (decisions and reads only).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newCertsInitCmd(), newCertsIssueCmd(), newCertsShowCmd())
	return cmd
}

func newCertsInitCmd() *cobra.Command {
	var (
		dir, name            string
		nodes, clients       []string
		hosts                []string
		validity, caValidity time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a development cluster CA and node and client certificates",
		Long: `init creates a cluster CA and, signed by it, one certificate per node (both
server and client authentication, SAN URI quotamesh://node/<id>) and per
client (SAN URIs quotamesh://client/<name> and quotamesh://role/<role>), and
writes them to --dir:

  ca.crt ca.key  nodes/<id>.crt nodes/<id>.key  clients/<name>.crt clients/<name>.key

Each client gets a role: admin may change limits and membership (the CLI's
limit, join and leave need one); decide may ask for decisions and read the
status and limits (what services use). By default it issues "admin" (role
admin) for the operator and "app" (role decide) for services.

Keys are written 0600. An existing file with other contents is never
overwritten. Node and client certificates last --validity (90 days): reissue
them with 'quotamesh certs issue' and SIGHUP the nodes (docs/operations.md,
"Rotating certificates"). For production, keep ca.key offline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			if len(nodes) == 0 {
				return usagef("--nodes needs at least one node ID")
			}
			if validity <= 0 || caValidity <= 0 {
				return usagef("--validity %v, --ca-validity %v: want positive durations", validity, caValidity)
			}
			if validity > caValidity {
				return usagef("--validity %v is longer than --ca-validity %v: a certificate cannot outlive its CA", validity, caValidity)
			}
			specs, err := certs.ParseClientSpecs(clients)
			if err != nil {
				return usageError{err}
			}
			set, err := certs.NewDevSet(name, nodes, hosts, specs, validity, caValidity)
			if err != nil {
				return usageError{err}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
			if err := set.WriteDir(dir); err != nil {
				return err
			}
			roles := make([]string, len(specs))
			for i, c := range specs {
				roles[i] = c.Name + "=" + c.Role.String()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a CA, %d node and %d client certificates (%s) to %s (hosts %s; valid %v, the CA %v)\n",
				len(nodes), len(specs), strings.Join(roles, ","), dir, strings.Join(hosts, ","), validity, caValidity)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the certificates to (required)")
	f.StringVar(&name, "ca-name", "QuotaMesh cluster CA", "the CA's common name")
	f.StringSliceVar(&nodes, "nodes", []string{"n1", "n2", "n3"}, "node IDs to issue certificates for")
	f.StringSliceVar(&clients, "clients", []string{"admin=admin", "app=decide"}, "client certificates to issue, as NAME=ROLE with ROLE admin or decide")
	f.StringSliceVar(&hosts, "hosts", []string{"127.0.0.1", "localhost"}, "DNS names and IP addresses every node certificate is valid for")
	f.DurationVar(&validity, "validity", defaultValidity, "how long node and client certificates are valid")
	f.DurationVar(&caValidity, "ca-validity", defaultCAValidity, "how long the CA is valid")
	return cmd
}

func newCertsIssueCmd() *cobra.Command {
	var (
		dir, out, nodeID, client, role string
		hosts                          []string
		validity                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue one node or client certificate from an existing CA",
		Long: `issue signs one more certificate with the CA in --dir (ca.crt and ca.key):
a node's (--node ID --hosts ...) or a client's (--client NAME --role
admin|decide), and writes it to --out (default --dir) in the layout of init.

An existing file with other contents is never overwritten: to renew a
certificate, issue it into a new directory (--out), copy it over the old
one where it is used, and send the node SIGHUP (docs/operations.md,
"Rotating certificates").

  quotamesh certs issue --dir certs --client billing --role decide
  quotamesh certs issue --dir certs --node n4 --hosts 10.0.0.4
  quotamesh certs issue --dir certs --node n1 --hosts 10.0.0.1 --out renewed`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case dir == "":
				return usagef("--dir is required: the directory holding ca.crt and ca.key")
			case (nodeID == "") == (client == ""):
				return usagef("give exactly one of --node ID and --client NAME")
			case client != "" && role == "":
				return usagef("--client %s needs --role admin or --role decide", client)
			case nodeID != "" && role != "":
				return usagef("--role is for client certificates; node certificates carry none")
			case client != "" && cmd.Flags().Changed("hosts"):
				return usagef("--hosts is for node certificates; client certificates carry none")
			case validity <= 0:
				return usagef("--validity %v: want a positive duration", validity)
			}
			if out == "" {
				out = dir
			}
			set, err := certs.LoadDir(dir)
			if err != nil {
				return fmt.Errorf("reading the CA in %s: %w", dir, err)
			}
			if set.CA.Key == nil {
				return fmt.Errorf("%s has no %s: issue where the CA key is kept", dir, certs.CAKeyFile)
			}
			if left := time.Until(set.CA.Cert.NotAfter); validity > left {
				return usagef("--validity %v is longer than the CA has left (%v, until %s)", validity, left.Round(time.Hour), set.CA.Cert.NotAfter.UTC().Format(time.RFC3339))
			}
			// Write the CA certificate(s) and the new pair only: ca.key
			// stays where it is.
			w := certs.NewSet(&certs.CA{Cert: set.CA.Cert, Trusted: set.CA.Trusted})
			what := ""
			if nodeID != "" {
				if err := certs.ValidateNodeID(nodeID); err != nil {
					return usagef("--node: %v", err)
				}
				b, err := set.CA.IssueNode(nodeID, hosts, validity)
				if err != nil {
					return usageError{err}
				}
				w.Nodes[nodeID] = b
				what = fmt.Sprintf("node %s (hosts %s)", nodeID, strings.Join(hosts, ","))
			} else {
				if err := certs.ValidateClientName(client); err != nil {
					return usagef("--client: %v", err)
				}
				r, err := certs.ParseRole(role)
				if err != nil {
					return usagef("--role: %v", err)
				}
				b, err := set.CA.IssueClient(client, r, validity)
				if err != nil {
					return usageError{err}
				}
				w.Clients[client] = b
				what = fmt.Sprintf("client %s (role %s)", client, r)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", out, err)
			}
			if err := w.WriteDir(out); err != nil {
				if errors.Is(err, certs.ErrFileExists) {
					return fmt.Errorf("%w (to renew a certificate, issue it with --out NEWDIR and copy it into place)", err)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a certificate for %s to %s, valid %v\n", what, out, validity)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory holding the CA (ca.crt and ca.key; required)")
	f.StringVar(&out, "out", "", "directory to write the certificate to (default --dir)")
	f.StringVar(&nodeID, "node", "", "issue a node certificate for this node ID")
	f.StringVar(&client, "client", "", "issue a client certificate for this name")
	f.StringVar(&role, "role", "", "the client's role: admin (limits and membership) or decide (decisions and reads only)")
	f.StringSliceVar(&hosts, "hosts", []string{"127.0.0.1", "localhost"}, "DNS names and IP addresses the node certificate is valid for")
	f.DurationVar(&validity, "validity", defaultValidity, "how long the certificate is valid")
	return cmd
}

func newCertsShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE.crt...",
		Short: "Show who a certificate speaks for, its role, issuer and validity",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tIDENTITY\tROLE\tISSUER\tNOT AFTER\tLEFT")
			now := time.Now()
			for _, path := range args {
				data, err := os.ReadFile(path)
				if err != nil {
					return usageError{err}
				}
				all, err := certs.ParseCertificatesPEM(data)
				if err != nil {
					return usageError{fmt.Errorf("%s: %w", path, err)}
				}
				for _, c := range all {
					ident, role, left, err := certs.Describe(c, now)
					if err != nil {
						return fmt.Errorf("%s: %w", path, err)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", filepath.Base(path), ident, role, c.Issuer.CommonName,
						c.NotAfter.UTC().Format(time.RFC3339), left)
				}
			}
			return tw.Flush()
		},
	}
}
