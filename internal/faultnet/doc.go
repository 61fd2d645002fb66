// Package faultnet wraps a net.PacketConn so that tests and the fault suite
// can drop, delay, reorder and block datagrams without netem.
//
// What it promises:
//
//   - With no faults set, a Conn forwards every call to the wrapped conn: one
//     atomic load per ReadFrom and WriteTo, no allocation, no extra copy, and
//     the same behaviour.
//   - Faults apply to outgoing datagrams (WriteTo): each is dropped with
//     probability Faults.Drop, otherwise delayed by Faults.Delay plus a
//     uniform jitter in [0, Faults.Jitter), and with probability
//     Faults.Reorder held back by a further Faults.ReorderDelay so that later
//     datagrams overtake it. Block partitions an address in both directions:
//     datagrams to it are discarded on WriteTo and datagrams from it are
//     discarded on ReadFrom; BlockOut discards only those to it (a one-way
//     partition). Wrap both ends of a link to fault both directions.
//   - Faults can be changed at any time from any goroutine (SetFaults, Block,
//     Unblock, Heal); a change applies to datagrams written after it.
//     Datagrams already in the delay queue keep their schedule, except that a
//     datagram whose destination is blocked when it falls due is discarded.
//   - Random decisions come from a PCG generator seeded by the caller, so one
//     goroutine writing the same datagrams sees the same decisions. With
//     several writers the order of draws, and so the decisions, depend on
//     scheduling.
//   - Delayed datagrams wait in a queue owned by the Conn, bounded by
//     MaxQueued (a full queue drops, as a router would). One goroutine,
//     started by Wrap, sends them when due; Close stops it, waits for it and
//     then closes the wrapped conn. Datagrams still queued at Close are
//     discarded.
//   - WriteTo never blocks longer than the wrapped conn's WriteTo, and
//     reports success for a datagram it dropped, queued or blocked, as a
//     lossy network would.
package faultnet
