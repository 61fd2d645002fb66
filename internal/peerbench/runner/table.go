package runner

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quotamesh/quotamesh/internal/peerbench/score"
)

// Kind is what a row measures.
type Kind int

// The kinds of rows, in the table's order.
const (
	KindAccuracy Kind = iota
	KindKeys
	KindLatency
	KindSaturation
)

// Row is one load against one system.
type Row struct {
	Case   string
	Kind   Kind
	System string
	// Offered and Decided are requests offered and decisions answered
	// per second.
	Offered, Decided float64
	// Score is how the decisions compare with a perfect limiter per key
	// (nil where every request is admitted: latency and saturation).
	Score *score.Result
	// P50us and P99us are latencies from intended send time; -1: none.
	P50us, P99us float64
	// ServersCPU and ClientsCPU are CPU seconds per 100,000 decisions
	// answered, of the system's processes and of this one (load
	// generator and clients); -1: not measured.
	ServersCPU, ClientsCPU float64
	// Failed counts calls that returned an error, Unsent arrivals the
	// generator gave up on.
	Failed, Unsent int64
	Note           string
}

// CPU is ServersCPU + ClientsCPU, or -1 when either is unknown.
func (r Row) CPU() float64 {
	if r.ServersCPU < 0 || r.ClientsCPU < 0 {
		return -1
	}
	return r.ServersCPU + r.ClientsCPU
}

// Env is where and when a run happened.
type Env struct {
	Start, End         time.Time
	LoadStart, LoadEnd string
	GoVersion          string
	CPUs               int
	Commit             string
}

func startEnv(Plan) *Env {
	return &Env{Start: time.Now().UTC(), LoadStart: loadavg(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU()}
}

func (e *Env) finish() { e.End, e.LoadEnd = time.Now().UTC(), loadavg() }

// loadavg is the first three fields of /proc/loadavg, or "unknown".
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// commitOf is the short commit of the repository at dir, or "".
func commitOf(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// columns are the table's headings.
var columns = []string{"load", "system", "offered/s", "decided/s", "error vs ideal (under/over)",
	"max aligned 1 s / limit", "denied within limit", "P50", "P99", "CPU s per 100k (servers + clients)", "failed", "note"}

// cells formats r as the table's cells.
func (r Row) cells() []string {
	errCell, maxCell, deniedCell := "–", "–", "–"
	if s := r.Score; s != nil {
		errCell = fmt.Sprintf("%s (−%s/+%s)", pct(s.Error), pct(s.Under), pct(s.Over))
		maxCell = fmt.Sprintf("%.2f", s.MaxAligned)
		deniedCell = fmt.Sprintf("%s (%d of %d)", pct(s.FalseDenialShare()), s.FalseDenials, s.UnderLimit)
	}
	cpu := "–"
	if r.CPU() >= 0 {
		cpu = fmt.Sprintf("%.2f (%.2f + %.2f)", r.CPU(), r.ServersCPU, r.ClientsCPU)
	}
	failed := fmt.Sprint(r.Failed)
	if r.Unsent > 0 {
		failed += fmt.Sprintf(" (+%d unsent)", r.Unsent)
	}
	offered := "–"
	if r.Offered > 0 {
		offered = count(r.Offered)
	}
	return []string{r.Case, r.System, offered, count(r.Decided), errCell, maxCell, deniedCell,
		micros(r.P50us), micros(r.P99us), cpu, failed, r.Note}
}

// progress is a one-line summary of r for stderr.
func (r Row) progress() string {
	c := r.cells()
	var b strings.Builder
	for i, h := range columns {
		if c[i] == "" || c[i] == "–" {
			continue
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", h, c[i])
	}
	return b.String()
}

// Ordered sorts rows by load, in the order loads first appear, and by
// system within a load, in the order systems first appear; it returns a
// new slice.
func Ordered(rows []Row) []Row {
	caseAt, sysAt := map[string]int{}, map[string]int{}
	for _, r := range rows {
		if _, ok := caseAt[r.Case]; !ok {
			caseAt[r.Case] = len(caseAt)
		}
		if _, ok := sysAt[r.System]; !ok {
			sysAt[r.System] = len(sysAt)
		}
	}
	out := append([]Row(nil), rows...)
	// Insertion sort: a few dozen rows, and stable.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0; j-- {
			a, b := out[j-1], out[j]
			if caseAt[a.Case] < caseAt[b.Case] || caseAt[a.Case] == caseAt[b.Case] && sysAt[a.System] <= sysAt[b.System] {
				break
			}
			out[j-1], out[j] = b, a
		}
	}
	return out
}

// WriteTable writes the run's header and its one table, as aligned text
// or as Markdown.
func WriteTable(w io.Writer, env *Env, rows []Row, markdown bool) error {
	commit := ""
	if env.Commit != "" {
		commit = ", commit " + env.Commit
	}
	fmt.Fprintf(w, "%s to %s UTC, %s, %d CPUs%s; load average (1, 5, 15 min) %s at the start, %s at the end\n\n",
		env.Start.Format("2006-01-02 15:04"), env.End.Format("15:04"), env.GoVersion, env.CPUs, commit, env.LoadStart, env.LoadEnd)
	rows = Ordered(rows)
	if markdown {
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
		for _, r := range rows {
			c := r.cells()
			for i := range c {
				c[i] = strings.ReplaceAll(c[i], "|", "/")
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(c, " | "))
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(columns, "\t"))
	last := ""
	for _, r := range rows {
		c := r.cells()
		if c[0] == last {
			c[0] = ""
		} else {
			last = c[0]
		}
		fmt.Fprintln(tw, strings.Join(c, "\t"))
	}
	return tw.Flush()
}

// pct writes a share as a percentage with two decimals.
func pct(x float64) string {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return "∞"
	}
	return fmt.Sprintf("%.2f %%", 100*x)
}

// count writes a rate or count with thousands separators.
func count(x float64) string {
	if x < 0 || math.IsNaN(x) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", x)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// micros writes a latency given in microseconds.
func micros(us float64) string {
	switch {
	case us < 0 || math.IsNaN(us):
		return "–"
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.1f ms", us/1000)
	}
	return fmt.Sprintf("%.2f s", us/1e6)
}
