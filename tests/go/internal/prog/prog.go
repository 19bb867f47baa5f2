// Package prog holds what the test programs (tests/go/franz, tests/go/sarama) share: their
// one JSON object on stdout, and their exit on a bad argument or a client error.
package prog

import (
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
