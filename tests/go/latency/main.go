// Command latency is the franz-go load of bench/latency.py --clients N --load-client franz: N
// producers and N consumers (kgo clients, one each) in one Go process, so that 100 clients cost
// the machine little CPU beside the broker they measure.
//
//	latency BOOTSTRAP TOPIC N RATE SECONDS WARMUP
//
// Producer i writes RATE records a second (100 B, acks=all and idempotent as kgo's defaults,
// linger 0) to partitions 2i and 2i+1 in turn for WARMUP + SECONDS seconds, the producers'
// schedules offset from one another by 1 / (RATE x N); each record carries the process's
// monotonic clock (ns) in its first 8 bytes. Consumer i is assigned partitions 2i and 2i+1 from
// offset 0 (no group; fetch max wait 500 ms, min bytes 1) and takes the clock again as
// PollFetches hands a record over. Records produced in the first WARMUP seconds are not timed;
// records not consumed within 10 s after the last one was produced are counted as not arrived.
//
// It first produces one warm-up record to each partition and waits until every consumer has read
// its two, prints "ready" and waits for a line on stdin (the parent reads the broker's CPU), then
// runs and prints one JSON object: {"sent": S, "received": R, "produce_errors": E, "latencies_ns": [...]}.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"odradek/tests/go/internal/prog"
)

const size = 100

func main() {
	if len(os.Args) != 7 {
		prog.Fail(errors.New("usage: latency BOOTSTRAP TOPIC N RATE SECONDS WARMUP"))
	}
	boot, topic := os.Args[1], os.Args[2]
	n, rate := prog.Atoi(os.Args[3]), prog.Atoi(os.Args[4])
	seconds, err := strconv.ParseFloat(os.Args[5], 64)
	if err != nil {
		prog.Fail(err)
	}
	warmup, err := strconv.ParseFloat(os.Args[6], 64)
	if err != nil {
		prog.Fail(err)
	}
	if n < 1 || rate < 1 || seconds <= 0 || warmup < 0 {
		prog.Fail(errors.New("N and RATE must be at least 1, SECONDS above 0, WARMUP at least 0"))
	}
	out, err := run(boot, topic, n, rate, seconds, warmup)
	if err != nil {
		prog.Fail(err)
	}
	prog.Print(out)
}

func run(boot, topic string, n, rate int, seconds, warmup float64) (*prog.Timed, error) {
	base := time.Now()
	clock := func() int64 { return int64(time.Since(base)) } // monotonic
	setup, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	producers := make([]*kgo.Client, n)
	consumers := make([]*kgo.Client, n)
	defer func() {
		for _, cl := range append(producers, consumers...) {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	for i := range n {
		p, err := kgo.NewClient(kgo.SeedBrokers(boot), kgo.ProducerLinger(0),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MaxBufferedRecords(1<<20))
		if err != nil {
			return nil, err
		}
		producers[i] = p
		warm := []*kgo.Record{{Topic: topic, Partition: int32(2 * i), Value: []byte("warm-up")},
			{Topic: topic, Partition: int32(2*i + 1), Value: []byte("warm-up")}}
		if err := p.ProduceSync(setup, warm...).FirstErr(); err != nil {
			return nil, fmt.Errorf("warm-up record of producer %d: %w", i, err)
		}
		c, err := kgo.NewClient(kgo.SeedBrokers(boot), kgo.FetchMaxWait(500*time.Millisecond), kgo.FetchMinBytes(1),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {
				int32(2 * i): kgo.NewOffset().At(0), int32(2*i + 1): kgo.NewOffset().At(0)}}))
		if err != nil {
			return nil, err
		}
		consumers[i] = c
	}

	var skipBefore atomic.Int64 // records stamped before this are not timed (set at the start)
	skipBefore.Store(1 << 62)
	var received atomic.Int64
	latencies := make([][]int64, n)
	warmed := make(chan error, n)
	consuming, stopConsuming := context.WithCancel(context.Background())
	defer stopConsuming()
	var wg sync.WaitGroup
	for i, c := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			warm := 0
			for {
				fetches := c.PollFetches(consuming)
				now := clock()
				if consuming.Err() != nil || fetches.IsClientClosed() {
					if warm < 2 {
						warmed <- fmt.Errorf("consumer %d read %d of its 2 warm-up records", i, warm)
					}
					return
				}
				for _, fe := range fetches.Errors() {
					if !errors.Is(fe.Err, context.Canceled) {
						fmt.Fprintf(os.Stderr, "latency: consumer %d: partition %d: %v\n", i, fe.Partition, fe.Err)
					}
				}
				fetches.EachRecord(func(r *kgo.Record) {
					if len(r.Value) != size {
						if warm++; warm == 2 {
							warmed <- nil
						}
						return
					}
					received.Add(1)
					if stamp := int64(binary.BigEndian.Uint64(r.Value)); stamp >= skipBefore.Load() {
						latencies[i] = append(latencies[i], now-stamp)
					}
				})
			}
		}()
	}
	for range n {
		select {
		case err := <-warmed:
			if err != nil {
				return nil, err
			}
		case <-setup.Done():
			return nil, errors.New("the consumers did not read their warm-up records within 120 s")
		}
	}

	plan, err := prog.Start(clock, rate, seconds, warmup)
	if err != nil {
		return nil, err
	}
	skipBefore.Store(plan.TimedFrom)
	start, total, step := plan.Start, plan.Total, plan.Step
	var sent, produceErrors atomic.Int64
	var producing sync.WaitGroup
	for i, p := range producers {
		producing.Add(1)
		go func() {
			defer producing.Done()
			offset := step * float64(i) / float64(n)
			for k := range total {
				due := start + int64(offset+step*float64(k))
				if wait := due - clock(); wait > 0 {
					time.Sleep(time.Duration(wait))
				}
				value := make([]byte, size)
				binary.BigEndian.PutUint64(value, uint64(clock()))
				sent.Add(1)
				p.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: int32(2*i + k%2), Value: value},
					func(_ *kgo.Record, err error) {
						if err != nil {
							produceErrors.Add(1)
						}
					})
			}
			flush, done := context.WithTimeout(context.Background(), 30*time.Second)
			defer done()
			if err := p.Flush(flush); err != nil {
				produceErrors.Add(1)
			}
		}()
	}
	producing.Wait()
	lastBy := start + int64((warmup+seconds+10)*1e9) // at most 10 s more for the last records
	for received.Load() < sent.Load() && clock() < lastBy {
		time.Sleep(20 * time.Millisecond)
	}
	stopConsuming()
	wg.Wait()
	out := &prog.Timed{Sent: sent.Load(), Received: received.Load(), ProduceErrors: produceErrors.Load(),
		LatenciesNs: []int64{}}
	for _, l := range latencies {
		out.LatenciesNs = append(out.LatenciesNs, l...)
	}
	return out, nil
}
