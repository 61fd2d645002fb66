// Package localcluster starts QuotaMesh nodes as real processes on this
// machine. It is the one launcher behind `quotamesh bench --local-cluster`,
// the bench's TCP baseline and the fault suite (cluster_test/), whose
// network-namespace and Docker backends plug into it.
//
// What it promises:
//
//   - Start writes a development CA and certificates (an "admin" client
//     included), gives every node an address (a fixed port or one the system
//     hands out), runs `<binary> serve` for each with the same bootstrap
//     list, and returns; WaitReady then polls every node's /readyz.
//   - Every process runs with a goroutine that waits for it (Group.Stop and
//     Group.Kill wait for all of them), writes its output to its own log
//     file (truncated on the first start, appended to on a restart), and on
//     Linux runs in its own process group, which signals reach as a whole;
//     with KillWithParent the kernel kills it if this process dies first.
//   - A process can be paused (SIGSTOP), resumed, killed with SIGKILL and
//     restarted on the same command line and data directory. Kill and Stop
//     mark the exit as expected; any other exit is reported to OnExit as
//     unexpected, and Died names the process, how it ended and the tail of
//     its log.
//   - How a process is run and signalled can be replaced (Config.Command,
//     Config.Signal): a backend runs the node in a network namespace or a
//     container and keeps its own network plumbing, and everything else
//     stays the same.
//
// InProcess is the variant without processes: nodes started with
// node.Start in this process, for `quotamesh demo` (whose load calls each
// node's embedded Allow) and for the command tests.
package localcluster
