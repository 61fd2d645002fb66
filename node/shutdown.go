package node

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Close stops the node: Shutdown with a short deadline. It does not leave
// the cluster (unless LeaveOnShutdown), so a node restarted from the same
// DataDir comes back as a member. It is idempotent.
func (n *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return n.Shutdown(ctx)
}

// Shutdown stops the node gracefully, in order (NATS style):
//
//  1. decisions return quotamesh.ErrClosed and /readyz fails;
//  2. no new client connection is served; streams in progress answer the
//     frames they have read and close; the RLS and HTTP decision APIs stop
//     accepting and finish the calls in progress;
//  3. the sync and housekeeping loops stop;
//  4. one last delta goes to every connected peer, so that they count this
//     node's last admissions;
//  5. with LeaveOnShutdown, the node leaves the cluster;
//  6. Raft stops (a leader hands leadership over first);
//  7. forwarded requests stop being served;
//  8. the transport closes (peers see the connections close at once);
//  9. the admin listener closes; every goroutine has ended when Shutdown
//     returns, and the DataDir's lock is released.
//
// ctx bounds the graceful steps (2, 4, 5); the rest always runs. Shutdown
// is idempotent: later and concurrent calls wait for the first and return
// its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() {
		n.shutdownErr = n.shutdown(ctx)
		close(n.done)
	})
	<-n.done
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	start := n.wall()
	n.log.Info().Msg("shutting down")
	n.state.Store(stateClosed)
	n.m.ready.Set(0)

	// 2. Clients.
	n.acceptClients.Store(false)
	n.stopClients()
	n.clients.close()
	n.waitGroupCtx(ctx, &n.clients)
	n.stopGateways(ctx) // the RLS and HTTP decision APIs

	// 3. Loops.
	n.stopLoops()
	n.loops.closeAndWait()

	// 4. Last deltas.
	n.lastSync(ctx)

	var errs []error
	// 5. Leave.
	if n.leaveOnShutdown.Load() && n.isMember.Load() {
		if err := n.store.Leave(ctx, n.cfg.ID); err != nil {
			errs = append(errs, fmt.Errorf("leaving the cluster: %w", err))
			n.log.Warn().Err(err).Msg("could not leave the cluster")
		} else {
			n.log.Info().Msg("left the cluster")
		}
	}
	// 6. Raft.
	if err := n.store.Close(); err != nil {
		errs = append(errs, err)
	}
	// 7. Forwarded requests.
	n.stopFwd()
	_ = n.fwdLayer.Close()
	n.fwd.closeAndWait()
	// 8. Transport (and with it the client connections still open).
	if err := n.tr.Close(); err != nil {
		errs = append(errs, err)
	}
	n.clients.wait()
	// 9. Admin listener.
	if n.http != nil {
		hctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		if err := n.http.Shutdown(hctx); err != nil {
			_ = n.http.Close()
		}
		cancel()
	}
	n.misc.closeAndWait()
	n.closeFault()
	n.m.unregister()
	n.shadow.unregister()
	n.gw.unregister()
	n.clk.Release()
	n.lock.release() // last: the directory is free for the next node
	err := errors.Join(errs...)
	n.log.Info().Err(err).Dur("took", n.wall().Sub(start)).Msg("stopped")
	if err != nil {
		return fmt.Errorf("quotamesh/node: shutdown: %w", err)
	}
	return nil
}

// waitGroupCtx waits for g until ctx ends. The waiting goroutine is one of
// misc's: it ends when g's members do, which were all told to stop.
func (n *Node) waitGroupCtx(ctx context.Context, g *group) {
	done := make(chan struct{})
	if !n.misc.Go(func() {
		g.wait()
		close(done)
	}) {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
