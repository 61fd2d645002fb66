package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
)

func newJoinCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "join ID HOST:PORT",
		Short: "Add a node to the cluster, through Raft from any member",
		Long: `join adds node ID, reachable by its peers at HOST:PORT (its advertised UDP
address), to the cluster's membership: it starts as a non-voter and the
leader promotes it when votes are short (max_voters). The node itself runs
'quotamesh serve' with an empty data directory and no --bootstrap; it waits
to be added (or joins by itself with --join).

  quotamesh join n4 10.0.0.4:7946 --addr 10.0.0.1:7946 --certs certs`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, addr := args[0], args[1]
			if err := certs.ValidateNodeID(id); err != nil {
				return usagef("node ID: %v", err)
			}
			if _, port, err := net.SplitHostPort(addr); err != nil {
				return usagef("address %q: want host:port: %v", addr, err)
			} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				return usagef("address %q: port %q: use a number from 1 to 65535", addr, port)
			}
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				idx, err := c.Join(ctx, id, addr)
				if err != nil {
					return a.explain(err, "join "+id)
				}
				if a.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"node": id, "addr": addr, "index": idx, "joined": true})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s at %s joined%s\n", id, addr, atIndex(idx))
				return nil
			})
		},
	}
	a.bind(cmd.Flags())
	return cmd
}

func newLeaveCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "leave ID",
		Short: "Remove a node from the cluster, through Raft from any member",
		Long: `leave removes node ID from the cluster's membership; a leaving voter is
replaced by a healthy non-voter. The node may keep running but is no longer
a member: shut it down afterwards. (A node started with
--leave-on-shutdown leaves by itself on SIGTERM.)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := certs.ValidateNodeID(id); err != nil {
				return usagef("node ID: %v", err)
			}
			// Leaving is idempotent: a node that is no longer a member
			// leaves at once.
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				idx, err := c.Leave(ctx, id)
				if err != nil {
					return a.explain(err, "leave "+id)
				}
				if a.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"node": id, "index": idx, "left": true})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s left%s\n", id, atIndex(idx))
				return nil
			})
		},
	}
	a.bind(cmd.Flags())
	return cmd
}

// atIndex says at which Raft index a change was made, when the node said.
func atIndex(idx uint64) string {
	if idx == 0 {
		return ""
	}
	return fmt.Sprintf(" (Raft index %d)", idx)
}
