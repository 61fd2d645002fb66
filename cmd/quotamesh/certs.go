package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/certs"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make and inspect cluster certificates",
	}
	cmd.AddCommand(newCertsInitCmd())
	return cmd
}

func newCertsInitCmd() *cobra.Command {
	var (
		dir, name      string
		nodes, clients []string
		hosts          []string
		validity       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a development cluster CA and node and client certificates",
		Long: `init creates a cluster CA and, signed by it, one certificate per node (both
server and client authentication, SAN URI quotamesh://node/<id>) and per
client (SAN URI quotamesh://client/<name>), and writes them to --dir:

  ca.crt ca.key  nodes/<id>.crt nodes/<id>.key  clients/<name>.crt clients/<name>.key

Keys are written 0600. An existing file with other contents is never
overwritten. The client "admin" may change limits when nodes require client
certificates. For production, keep ca.key offline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			if len(nodes) == 0 {
				return usagef("--nodes needs at least one node ID")
			}
			if validity <= 0 {
				return usagef("--validity %v: want a positive duration", validity)
			}
			ca, err := certs.NewCA(name, validity)
			if err != nil {
				return err
			}
			set := certs.NewSet(ca)
			for _, id := range nodes {
				if err := certs.ValidateNodeID(id); err != nil {
					return usagef("--nodes: %v", err)
				}
				b, err := ca.IssueNode(id, hosts, validity)
				if err != nil {
					return fmt.Errorf("node %q: %w", id, err)
				}
				set.Nodes[id] = b
			}
			for _, c := range clients {
				if err := certs.ValidateClientName(c); err != nil {
					return usagef("--clients: %v", err)
				}
				b, err := ca.IssueClient(c, validity)
				if err != nil {
					return fmt.Errorf("client %q: %w", c, err)
				}
				set.Clients[c] = b
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
			if err := set.WriteDir(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a CA, %d node and %d client certificates to %s (hosts %s)\n",
				len(nodes), len(clients), dir, strings.Join(hosts, ","))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the certificates to (required)")
	f.StringVar(&name, "ca-name", "QuotaMesh cluster CA", "the CA's common name")
	f.StringSliceVar(&nodes, "nodes", []string{"n1", "n2", "n3"}, "node IDs to issue certificates for")
	f.StringSliceVar(&clients, "clients", []string{"admin"}, "client names to issue certificates for")
	f.StringSliceVar(&hosts, "hosts", []string{"127.0.0.1", "localhost"}, "DNS names and IP addresses every node certificate is valid for")
	f.DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificates are valid")
	return cmd
}
