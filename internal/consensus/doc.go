// Package consensus keeps QuotaMesh's limit table agreed across the cluster
// with Raft (hashicorp/raft, with raft-wal as the log and stable store). It
// is the only package that imports hashicorp/raft.
//
// # What it promises
//
//   - One table, the same on every node: the Raft state machine's state is a
//     *limits.Table, changed only by set and delete commands in log order.
//     Every node applies every committed change, usually within two commit
//     timeouts of the leader committing it (see docs/design.md section 8 for
//     measured figures).
//   - Nothing on the request path waits for Raft: Store.Table is one atomic
//     load of the latest applied table, which the state machine swaps after
//     each change; Config.OnChange tells the node when it does.
//   - Acknowledged changes survive: Set and Delete return success only once
//     the change is committed (on a majority of voters' disks) and applied on
//     the calling node. Killing the leader loses no acknowledged change.
//   - Bad input never reaches the log: rules and patterns are validated
//     before they are proposed, on the calling node and again on the leader,
//     and the error names the bad value.
//   - Exactly once: every write carries a request ID that the state machine
//     remembers (the last 4096), so the retries the Store makes across leader
//     changes and lost responses never apply a change twice.
//   - Linearizable reads: Get, List and Sync ask the leader, which confirms
//     its leadership with a round of heartbeats (VerifyLeader) and has applied
//     every change committed before its term (a Barrier once per term), for
//     its applied index; the calling node waits until it has applied as far,
//     then reads its own table.
//   - Any node can be asked: a follower forwards writes, consistent reads and
//     membership changes to the leader through the node's Forwarder, and
//     errors come back with their sentinel identity (ErrNoRule stays
//     ErrNoRule). HandleForwardFrom takes the authenticated sender too: a
//     node that is not a member may only ask to join as itself.
//   - Few voters: at most Config.MaxVoters (3 or 5) members vote; the rest
//     are non-voters that receive every change but take no part in elections
//     or commit quorums, so a cluster of 100 nodes still commits with 3 acks.
//     New members join as non-voters and the leader promotes healthy ones
//     when voters are short, or in place of a voter unreachable for
//     Config.DeadVoterAfter.
//   - Restart from disk: the log, the vote and snapshots (the whole table in
//     msgpack) live in Config.DataDir; a node that restarts restores its
//     latest snapshot at once and catches up from the leader.
//
// # What it does not promise
//
//   - Table on a follower is not linearizable: it trails the leader by a
//     commit timeout normally, and for as long as the node cannot hear the
//     leader during a partition. That is by design: the request path must
//     not wait for Raft.
//   - Without a majority of voters there is no leader: writes and
//     consistent reads fail with ErrTimeout (wrapping ErrNoLeader) when their
//     context ends, while every node keeps serving its last table. Bringing
//     back the lost voters (from their disks) restores the cluster; if they
//     are gone for good, recovery is an operator's job (Raft's
//     RecoverCluster), which this package does not automate.
//   - Counts, windows and admission decisions are not here: they never touch
//     Raft (see the crdt and share packages).
//
// The StreamLayer (Raft's RPCs) and the Forwarder (requests to the leader)
// are interfaces the node implements over its QUIC transport; package
// consensustest provides in-memory versions for tests.
package consensus
