// Command wirefloor is bench/wire_floor.py's load and its compiled relay: the exchanges of the
// 50 x 50 load of bench/latency.py --clients with no Kafka in them, to measure what the machine's
// loopback and scheduler alone cost that load.
//
//	wirefloor serve ADDRESS
//	wirefloor load ADDRESS N RATE SECONDS WARMUP
//
// Frames are a 4-byte big-endian size and that many bytes. The relay (serve) reads each connection's
// first frame, "P i" or "C i" (producer or consumer i). A producer's frame carries records (100 B
// each, a clock stamp in their first 8 bytes): the relay answers it with a 12-byte frame (the ack)
// and adds its records to consumer i's pending bytes. A consumer's frame is a fetch: the relay answers
// it with consumer i's pending records at once if there are any, else parks it until a producer's
// frame brings some. So each record costs what it costs in Kafka's shape: a request and its answer on
// the producer's connection, and a parked fetch answered and the next fetch sent on the consumer's.
//
// The load runs N producers and N consumers (one connection each) in one process: producer i sends
// RATE records a second for WARMUP + SECONDS seconds, the producers' schedules offset from one
// another, with up to 5 frames unacknowledged (as franz-go's idempotent producer keeps), records due
// while 5 are out going together in the next frame; consumer i keeps one fetch out and takes the
// clock as each answer arrives. It prints "ready", waits for a line on stdin, runs, and prints one
// JSON object: {"sent": S, "received": R, "produce_errors": 0, "latencies_ns": [...]}, the records
// of the first WARMUP seconds not timed.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"odradek/tests/go/internal/prog"
)

const (
	size     = 100
	inFlight = 5
	maxFrame = 64 << 20
)

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "serve":
		if err := serve(os.Args[2]); err != nil {
			prog.Fail(err)
		}
	case len(os.Args) == 7 && os.Args[1] == "load":
		n, rate := prog.Atoi(os.Args[3]), prog.Atoi(os.Args[4])
		seconds, err1 := strconv.ParseFloat(os.Args[5], 64)
		warmup, err2 := strconv.ParseFloat(os.Args[6], 64)
		if err := errors.Join(err1, err2); err != nil {
			prog.Fail(err)
		}
		if n < 1 || rate < 1 || seconds <= 0 || warmup < 0 {
			prog.Fail(errors.New("N and RATE must be at least 1, SECONDS above 0, WARMUP at least 0"))
		}
		out, err := load(os.Args[2], n, rate, seconds, warmup)
		if err != nil {
			prog.Fail(err)
		}
		prog.Print(out)
	default:
		prog.Fail(errors.New("usage: wirefloor serve ADDRESS | wirefloor load ADDRESS N RATE SECONDS WARMUP"))
	}
}

func readFrame(r *bufio.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return body, err
}

func frame(body []byte) []byte {
	out := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	copy(out[4:], body)
	return out
}

// mailbox is consumer i's side of the relay: records not yet fetched, and whether a fetch is parked.
type mailbox struct {
	mu      sync.Mutex
	pending []byte
	parked  bool
	conn    net.Conn
}

// deliver hands the pending records to a parked fetch; called with mu held.
func (m *mailbox) deliver() {
	if !m.parked || len(m.pending) == 0 || m.conn == nil {
		return
	}
	m.parked = false
	out := frame(m.pending)
	m.pending = m.pending[:0]
	_, _ = m.conn.Write(out)
}

func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	boxes := map[int]*mailbox{}
	box := func(i int) *mailbox {
		mu.Lock()
		defer mu.Unlock()
		if boxes[i] == nil {
			boxes[i] = &mailbox{}
		}
		return boxes[i]
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			r := bufio.NewReaderSize(conn, 64<<10)
			hello, err := readFrame(r)
			if err != nil || len(hello) < 3 {
				return
			}
			i, err := strconv.Atoi(string(hello[2:]))
			if err != nil {
				return
			}
			m := box(i)
			ack := frame(make([]byte, 8))
			if hello[0] == 'C' {
				m.mu.Lock()
				m.conn = conn
				m.mu.Unlock()
			}
			for {
				body, err := readFrame(r)
				if err != nil {
					return
				}
				m.mu.Lock()
				if hello[0] == 'P' {
					m.pending = append(m.pending, body...)
				} else {
					m.parked = true
				}
				m.deliver()
				m.mu.Unlock()
				if hello[0] == 'P' {
					if _, err := conn.Write(ack); err != nil {
						return
					}
				}
			}
		}()
	}
}

func dial(addr string, role byte, i int) (net.Conn, *bufio.Reader, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write(frame([]byte(fmt.Sprintf("%c %d", role, i)))); err != nil {
		return nil, nil, err
	}
	return conn, bufio.NewReaderSize(conn, 64<<10), nil
}

func load(addr string, n, rate int, seconds, warmup float64) (*prog.Timed, error) {
	base := time.Now()
	clock := func() int64 { return int64(time.Since(base)) } // monotonic
	var skipBefore atomic.Int64
	skipBefore.Store(1 << 62)
	var sent, received atomic.Int64
	latencies := make([][]int64, n)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		conn, r, err := dial(addr, 'C', i)
		if err != nil {
			return nil, err
		}
		conns = append(conns, conn)
		go func() {
			fetch := frame([]byte{0})
			for {
				if _, err := conn.Write(fetch); err != nil {
					return
				}
				body, err := readFrame(r)
				if err != nil {
					return
				}
				now := clock()
				for at := 0; at+size <= len(body); at += size {
					received.Add(1)
					if stamp := int64(binary.BigEndian.Uint64(body[at:])); stamp >= skipBefore.Load() {
						latencies[i] = append(latencies[i], now-stamp)
					}
				}
			}
		}()
	}
	type producer struct {
		conn  net.Conn
		r     *bufio.Reader
		slots chan struct{}
	}
	producers := make([]producer, n)
	for i := range n {
		conn, r, err := dial(addr, 'P', i)
		if err != nil {
			return nil, err
		}
		conns = append(conns, conn)
		producers[i] = producer{conn, r, make(chan struct{}, inFlight)}
	}

	plan, err := prog.Start(clock, rate, seconds, warmup)
	if err != nil {
		return nil, err
	}
	skipBefore.Store(plan.TimedFrom)
	start, total, step := plan.Start, plan.Total, plan.Step
	for i, p := range producers {
		acked := make(chan int, 1)
		go func() { // the acks free the in-flight slots
			for {
				if _, err := readFrame(p.r); err != nil {
					return
				}
				<-p.slots
				select {
				case acked <- 1:
				default:
				}
			}
		}()
		go func() {
			defer p.conn.(*net.TCPConn).CloseWrite()
			offset := step * float64(i) / float64(n)
			var batch []byte
			k := 0
			for k < total || len(batch) > 0 {
				if k < total {
					due := start + int64(offset+step*float64(k))
					wait := due - clock()
					if wait > 0 && len(batch) == 0 {
						time.Sleep(time.Duration(wait))
						wait = 0
					}
					if wait <= 0 {
						record := make([]byte, size)
						binary.BigEndian.PutUint64(record, uint64(clock()))
						batch = append(batch, record...)
						sent.Add(1)
						k++
						continue // take every record already due into the batch
					}
				}
				select {
				case p.slots <- struct{}{}:
					if _, err := p.conn.Write(frame(batch)); err != nil {
						return
					}
					batch = batch[:0]
				case <-acked: // a slot freed: try again
				case <-time.After(time.Millisecond): // the next record may be due
				}
			}
		}()
	}
	lastBy := start + int64((warmup+seconds+10)*1e9)
	for received.Load() < int64(total*n) && clock() < lastBy {
		time.Sleep(20 * time.Millisecond)
	}
	out := &prog.Timed{Sent: sent.Load(), Received: received.Load()}
	for _, l := range latencies {
		out.LatenciesNs = append(out.LatenciesNs, l...)
	}
	return out, nil
}
