package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/limits"
)

// setLimit sets the limit through Raft and waits until every node applied
// it (its Raft applied index reached the change's), within --ready-timeout.
func setLimit(ctx context.Context, clients []*client.Client, r Plan) error {
	ctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
	defer cancel()
	rule := limits.Rule{Pattern: r.work.Rule, Rate: r.work.Limit}
	var index uint64
	var err error
	for {
		// Right after an election a node may answer that it knows no
		// leader yet: try again until the timeout.
		if index, err = clients[0].SetLimit(ctx, rule); err == nil {
			break
		}
		if errors.Is(err, client.ErrForbidden) || ctx.Err() != nil {
			return fmt.Errorf("bench: set limit %s: %w", rule, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, c := range clients {
		for {
			applied, err := appliedIndex(ctx, c)
			if err == nil && applied >= index {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("bench: node %d (%s) did not apply limit %s (index %d; applied %d, %v): %w",
					i, c.Node(), rule, index, applied, err, context.Cause(ctx))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// prime makes one call for the workload's one key through each client, so
// that each holds a lease (or, in strict mode, has made a round trip) when
// the load starts; with many keys it does nothing (most are cold).
// A call that gets no answer in time is tried again within --ready-timeout:
// a loaded machine can hold a first lease back longer than the SDK's
// request timeout.
func prime(ctx context.Context, clients []*client.Client, names []string, r Plan) error {
	if r.work.Keys > 1 {
		return nil
	}
	key := r.work.KeyName(0)
	ctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
	defer cancel()
	for i, c := range clients {
		for {
			_, err := c.Allow(ctx, key)
			if err == nil {
				break
			}
			if !errors.Is(err, quotamesh.ErrUnavailable) || ctx.Err() != nil {
				return fmt.Errorf("bench: first call through %s: %w", names[i], err)
			}
		}
	}
	return nil
}

// appliedIndex reads the Raft applied index from a node's status.
func appliedIndex(ctx context.Context, c *client.Client) (uint64, error) {
	raw, err := c.Status(ctx)
	if err != nil {
		return 0, err
	}
	return parseAppliedIndex(c.Node(), raw)
}

// parseAppliedIndex reads raft.applied_index from node's status document.
func parseAppliedIndex(node string, raw []byte) (uint64, error) {
	var st struct {
		Raft struct {
			AppliedIndex uint64 `json:"applied_index"`
		} `json:"raft"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, fmt.Errorf("status of %s: %w", node, err)
	}
	return st.Raft.AppliedIndex, nil
}
