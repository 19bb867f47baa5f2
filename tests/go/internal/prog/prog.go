// Package prog holds what the test programs (tests/go/franz, tests/go/sarama) share: their
// one JSON object on stdout, and their exit on a bad argument or a client error.
package prog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Fail prints "PROGRAM: err" on stderr and exits with code 1.
func Fail(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
	os.Exit(1)
}

// Atoi is strconv.Atoi of a command-line argument; Fail if it is not a number.
func Atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		Fail(err)
	}
	return n
}

// Print writes out as one line of JSON on stdout.
func Print(out any) {
	line, err := json.Marshal(out)
	if err != nil {
		Fail(err)
	}
	fmt.Println(string(line))
}

// Consumed is a record a group member read, as the programs print it.
type Consumed struct {
	Member    int    `json:"member"`
	Value     string `json:"value"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Schedule is a timed load's plan (tests/go/latency, tests/go/wirefloor): when it started on the
// program's clock, the stamp before which records are not timed, and each producer's records and
// the ns between two of them.
type Schedule struct {
	Start, TimedFrom int64
	Total            int
	Step             float64
}

// Start prints "ready", waits for the parent's start line on stdin, and plans RATE records a second
// for warmup + seconds from then, the first warmup seconds' not timed.
func Start(clock func() int64, rate int, seconds, warmup float64) (Schedule, error) {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return Schedule{}, fmt.Errorf("waiting for the start line: %w", err)
	}
	start := clock()
	return Schedule{Start: start, TimedFrom: start + int64(warmup*1e9), Total: int(float64(rate) * (warmup + seconds)),
		Step: 1e9 / float64(rate)}, nil
}

// Timed is what a timed load prints (bench/latency.py's run_go_load reads it): the records sent and
// received, those not acknowledged, and each timed record's latency in ns.
type Timed struct {
	Sent          int64   `json:"sent"`
	Received      int64   `json:"received"`
	ProduceErrors int64   `json:"produce_errors"`
	LatenciesNs   []int64 `json:"latencies_ns"`
}
