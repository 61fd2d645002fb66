package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/statusview"
	"github.com/quotamesh/quotamesh/node"
)

// memberTimeout bounds asking another member for its own status.
const memberTimeout = 3 * time.Second

func newStatusCmd() *cobra.Command {
	var (
		a   adminFlags
		all bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: members, leader, per-node rates and shares, sync lag, health, top keys",
		Long: `status asks the nearest --addr node for its status document and prints it
as tables: the members as that node sees them (role, connection, sync lag,
round-trip time), and the keys it admits most with every node's admitted
rate per second and this node's share of the limit.

With --all (the default) it also asks every other member, at the address
the member advertises, for its own view: its health (ready, fenced, the
reasons it is not ready), the rate it admits and is offered, and its share
of each top key. A member this machine cannot reach shows '-'.

--json prints the status document of the node answering, unchanged (the
document of /status on the node's admin listener; durations in ns).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
			defer cancel()
			raw, err := c.Status(ctx)
			if err != nil {
				return a.explain(err, "status")
			}
			if a.json {
				_, err := cmd.OutOrStdout().Write(append(raw, '\n'))
				return err
			}
			var st node.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("status: decoding the node's document: %w", err)
			}
			views := map[string]*node.Status{st.Node: &st}
			if all {
				for id, v := range a.memberViews(ctx, cmd, &st) {
					views[id] = v
				}
			}
			statusview.Print(cmd.OutOrStdout(), &st, views, all, memberTimeout)
			return nil
		},
	}
	a.bind(cmd.Flags())
	cmd.Flags().BoolVar(&all, "all", true, "also ask every other member for its own status")
	return cmd
}

// memberViews asks every other member of st for its status, at once; the
// members that do not answer within memberTimeout are left out.
func (a *adminFlags) memberViews(ctx context.Context, cmd *cobra.Command, st *node.Status) map[string]*node.Status {
	opts, err := a.options()
	if err != nil {
		return nil
	}
	var (
		mu  sync.Mutex
		out = map[string]*node.Status{}
		wg  sync.WaitGroup
	)
	for _, m := range st.Members {
		if m.Self || m.Addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mctx, cancel := context.WithTimeout(ctx, min(memberTimeout, a.timeout))
			defer cancel()
			c, err := client.Dial(mctx, []string{m.Addr}, slices.Concat(opts, []client.Option{client.WithNodeID(m.ID)})...)
			if err != nil {
				return
			}
			defer c.Close()
			raw, err := c.Status(mctx)
			if err != nil {
				return
			}
			var v node.Status
			if json.Unmarshal(raw, &v) != nil {
				return
			}
			mu.Lock()
			out[m.ID] = &v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
