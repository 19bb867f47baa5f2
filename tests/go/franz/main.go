// Command franz drives franz-go (kgo and kadm) against a broker for tests/test_go_clients.py.
// Each sub-command prints one JSON object on stdout; any client error ends it with exit code 1
// and the error on stderr.
//
//	franz admin BOOTSTRAP TOPIC          kadm: create, list offsets, describe and alter configs
//	franz produce BOOTSTRAP TOPIC N      acks=all, idempotent (kgo's defaults), keyed records; DescribeProducers
//	franz group BOOTSTRAP TOPIC GROUP N  two members, N records, commits, kadm describe and lag; one leaves
//	franz txn BOOTSTRAP IN OUT GROUP N   GroupTransactSession, an aborted and a committed transaction
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"odradek/tests/go/internal/prog"
)

func main() {
	if len(os.Args) < 4 {
		prog.Fail(errors.New("usage: franz admin|produce|group|txn BOOTSTRAP ARGS..."))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	boot, args := os.Args[2], os.Args[3:]
	var out any
	var err error
	switch os.Args[1] {
	case "admin":
		out, err = admin(ctx, boot, args[0])
	case "produce":
		out, err = produce(ctx, boot, args[0], prog.Atoi(args[1]))
	case "group":
		out, err = group(ctx, boot, args[0], args[1], prog.Atoi(args[2]))
	case "txn":
		out, err = txn(ctx, boot, args[0], args[1], args[2], prog.Atoi(args[3]))
	default:
		err = fmt.Errorf("unknown sub-command %q", os.Args[1])
	}
	if err != nil {
		prog.Fail(err)
	}
	prog.Print(out)
}

// written counts the requests every client of this process wrote, by API name.
var written = &requestCounter{counts: map[string]int{}}

type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.counts[kmsg.NameForKey(key)]++
	}
}

func (c *requestCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// common is every client's options: the seed broker, short fetch waits, and kgo's log on stderr at
// the level named by $GO_CLIENT_LOG (debug, info, warn) when it is set.
func common(boot string) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(boot), kgo.FetchMaxWait(200 * time.Millisecond), kgo.WithHooks(written)}
	levels := map[string]kgo.LogLevel{"debug": kgo.LogLevelDebug, "info": kgo.LogLevelInfo, "warn": kgo.LogLevelWarn}
	if level, ok := levels[os.Getenv("GO_CLIENT_LOG")]; ok {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, level, nil)))
	}
	return opts
}

func newClient(boot string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append(common(boot), opts...)...)
}

type offsets map[int32]int64

func listed(l kadm.ListedOffsets, topic string) (offsets, error) {
	if err := l.Error(); err != nil {
		return nil, err
	}
	o := offsets{}
	for p, lo := range l[topic] {
		o[p] = lo.Offset
	}
	return o, nil
}

func admin(ctx context.Context, boot, topic string) (any, error) {
	cl, err := newClient(boot)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	retention := "3600000"
	created, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"retention.ms": &retention}, topic)
	if err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}
	again, _ := adm.CreateTopic(ctx, 3, 1, nil, topic)
	againErr := ""
	if again.Err != nil {
		againErr = again.Err.Error()
	}

	before := time.Now().UnixMilli()
	var recs []*kgo.Record
	for p := range int32(3) {
		for i := range int(p) + 1 { // partition p holds p+1 records
			recs = append(recs, &kgo.Record{Partition: p, Value: []byte(fmt.Sprintf("p%d-%d", p, i))})
		}
	}
	producer, err := newClient(boot, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	err = producer.ProduceSync(ctx, recs...).FirstErr()
	producer.Close()
	if err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}

	start, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	end, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	after, err := adm.ListOffsetsAfterMilli(ctx, before, topic)
	if err != nil {
		return nil, err
	}
	future, err := adm.ListOffsetsAfterMilli(ctx, time.Now().Add(time.Hour).UnixMilli(), topic)
	if err != nil {
		return nil, err
	}

	described, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	td := described[topic]
	if td.Err != nil {
		return nil, fmt.Errorf("metadata: %w", td.Err)
	}
	var leaders []int32
	for _, p := range td.Partitions.Sorted() {
		leaders = append(leaders, p.Leader)
	}

	// IncrementalAlterConfigs (set and delete), then the legacy AlterConfigs (the whole state)
	segment := "1048576"
	afterIncr, err := alterTopicConfigs(ctx, adm, topic, "incremental alter configs", adm.AlterTopicConfigs,
		[]kadm.AlterConfig{
			{Op: kadm.SetConfig, Name: "segment.bytes", Value: &segment},
			{Op: kadm.DeleteConfig, Name: "retention.ms"},
		}, "segment.bytes", segment)
	if err != nil {
		return nil, err
	}
	cleanup := "compact"
	afterState, err := alterTopicConfigs(ctx, adm, topic, "alter configs", adm.AlterTopicConfigsState,
		[]kadm.AlterConfig{{Name: "cleanup.policy", Value: &cleanup}}, "cleanup.policy", cleanup)
	if err != nil {
		return nil, err
	}

	// the cluster-wide defaults (a BROKER resource without a name) and one broker's configs
	clusterDefaults, err := brokerConfigs(ctx, adm)
	if err != nil {
		return nil, err
	}
	brokerOwn, err := brokerConfigs(ctx, adm, leaders[0])
	if err != nil {
		return nil, err
	}

	o := map[string]any{"topic": created.Topic, "created_partitions": created.NumPartitions,
		"topic_id_set": created.ID != kadm.TopicID{}, "create_again_error": againErr,
		"leaders": leaders, "internal": td.IsInternal,
		"after_incremental": afterIncr, "after_alter_configs": afterState,
		"cluster_default_configs": clusterDefaults, "broker_configs": brokerOwn}
	for name, l := range map[string]kadm.ListedOffsets{"start": start, "end": end, "after_before": after, "future": future} {
		if o[name], err = listed(l, topic); err != nil {
			return nil, fmt.Errorf("list offsets %s: %w", name, err)
		}
	}
	return o, nil
}

// alterTopicConfigs sends configs for topic through alter (kadm's AlterTopicConfigs or
// AlterTopicConfigsState; what names it in an error) and reads the topic's configs back once key
// has value.
func alterTopicConfigs(ctx context.Context, adm *kadm.Client, topic, what string,
	alter func(context.Context, []kadm.AlterConfig, ...string) (kadm.AlterConfigsResponses, error),
	configs []kadm.AlterConfig, key, value string) (map[string][2]string, error) {
	resps, err := alter(ctx, configs, topic)
	if err == nil {
		_, err = resps.On(topic, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return topicConfigsOnce(ctx, adm, topic, key, value)
}

// topicConfigsOnce is topicConfigs once key shows value: Kafka's brokers apply a config change
// after the controller answered it, so a client describing right away may still see the old one.
func topicConfigsOnce(ctx context.Context, adm *kadm.Client, topic, key, value string) (map[string][2]string, error) {
	for deadline := time.Now().Add(10 * time.Second); ; {
		configs, err := topicConfigs(ctx, adm, topic)
		if err != nil || configs[key][0] == value || time.Now().After(deadline) {
			return configs, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// topicConfigs is the topic's config entries with their sources, as DescribeConfigs answers them.
func topicConfigs(ctx context.Context, adm *kadm.Client, topic string) (map[string][2]string, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return nil, err
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return nil, err
	}
	out := map[string][2]string{}
	for _, c := range rc.Configs {
		out[c.Key] = [2]string{c.MaybeValue(), c.Source.String()}
	}
	return out, nil
}

func createTopic(ctx context.Context, boot, topic string, partitions int32) error {
	cl, err := newClient(boot)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// brokerConfigs is DescribeConfigs of one broker, or of the cluster-wide defaults without one.
func brokerConfigs(ctx context.Context, adm *kadm.Client, broker ...int32) (map[string][2]string, error) {
	rcs, err := adm.DescribeBrokerConfigs(ctx, broker...)
	if err != nil {
		return nil, err
	}
	out := map[string][2]string{}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe broker configs %q: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			out[c.Key] = [2]string{c.MaybeValue(), c.Source.String()}
		}
	}
	return out, nil
}

type produced struct {
	Key        string `json:"key"`
	Value      string `json:"value"`
	Partition  int32  `json:"partition"`
	Offset     int64  `json:"offset"`
	ProducerID int64  `json:"producer_id"`
	Epoch      int16  `json:"producer_epoch"`
	Timestamp  int64  `json:"timestamp"`
}

func produce(ctx context.Context, boot, topic string, n int) (any, error) {
	// acks=all and idempotence are kgo's defaults; the topic is created by the broker (auto.create.topics.enable)
	cl, err := newClient(boot, kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range n {
		recs[i] = &kgo.Record{Key: []byte(fmt.Sprintf("key-%d", i%5)), Value: []byte(fmt.Sprintf("value-%d", i)),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, err
	}
	out := make([]produced, n)
	for i, r := range recs {
		out[i] = produced{string(r.Key), string(r.Value), r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch,
			r.Timestamp.UnixMilli()}
	}

	// what the partition leaders remember of this producer, to tell a retried batch from a new one
	described, err := kadm.NewClient(cl).DescribeProducers(ctx, kadm.TopicsSet{topic: nil})
	if err != nil {
		return nil, fmt.Errorf("describe producers: %w", err)
	}
	var producers []map[string]any
	described.EachProducer(func(d kadm.DescribedProducer) {
		producers = append(producers, map[string]any{"partition": d.Partition, "producer_id": d.ProducerID,
			"producer_epoch": d.ProducerEpoch, "last_sequence": d.LastSequence, "txn_start": d.CurrentTxnStartOffset})
	})
	return map[string]any{"records": out, "producers": producers}, nil
}

// member is one consumer of the group with the partitions it holds now (kgo's cooperative-sticky
// balancer adds and revokes partitions incrementally).
type member struct {
	mu       sync.Mutex
	assigned map[int32]bool
	cl       *kgo.Client
}

func (m *member) held() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p, ok := range m.assigned {
		if ok {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

func group(ctx context.Context, boot, topic, groupID string, n int) (any, error) {
	const partitions = 3
	if err := createTopic(ctx, boot, topic, partitions); err != nil {
		return nil, err
	}
	adm, err := newClient(boot)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	kadmin := kadm.NewClient(adm)

	members := make([]*member, 2)
	for i := range members {
		m := &member{assigned: map[int32]bool{}}
		m.cl, err = newClient(boot, kgo.ConsumerGroup(groupID), kgo.ConsumeTopics(topic), kgo.ClientID(fmt.Sprintf("member-%d", i)),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
				m.mu.Lock()
				defer m.mu.Unlock()
				for _, p := range a[topic] {
					m.assigned[p] = true
				}
			}),
			kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
				m.mu.Lock()
				defer m.mu.Unlock()
				for _, p := range r[topic] {
					m.assigned[p] = false
				}
			}))
		if err != nil {
			return nil, err
		}
		defer m.cl.Close()
		members[i] = m
	}
	// Both members hold partitions, together all of them: the group is settled before anything is produced.
	for {
		a, b := members[0].held(), members[1].held()
		if len(a) > 0 && len(b) > 0 && len(a)+len(b) == partitions {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the members hold %v and %v of %d partitions", a, b, partitions)
		case <-time.After(50 * time.Millisecond):
		}
	}

	if err := produceValues(ctx, boot, topic, "v", n); err != nil {
		return nil, err
	}

	var mu sync.Mutex
	var got []prog.Consumed
	var wg sync.WaitGroup
	errs := make([]error, len(members))
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	for i, m := range members {
		wg.Go(func() {
			for pollCtx.Err() == nil {
				fs := m.cl.PollFetches(pollCtx)
				if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
					errs[i] = err
					stopPolling()
					return
				}
				mu.Lock()
				fs.EachRecord(func(r *kgo.Record) {
					got = append(got, prog.Consumed{Member: i, Value: string(r.Value), Partition: r.Partition, Offset: r.Offset})
				})
				if len(got) >= n {
					stopPolling()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("consumed %d of %d records", len(got), n)
	}
	var held [][]int32
	for _, m := range members {
		if err := m.cl.CommitUncommittedOffsets(ctx); err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
		held = append(held, m.held())
	}

	described, err := kadmin.DescribeGroups(ctx, groupID)
	if err != nil {
		return nil, fmt.Errorf("describe groups: %w", err)
	}
	dg := described[groupID]
	var describedMembers []map[string]any
	for _, dm := range dg.Members {
		var ps []int32
		if c, ok := dm.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				ps = append(ps, t.Partitions...)
			}
		}
		slices.Sort(ps)
		describedMembers = append(describedMembers, map[string]any{"client_id": dm.ClientID, "host": dm.ClientHost,
			"member_id": dm.MemberID, "partitions": ps})
	}
	lags, err := kadmin.Lag(ctx, groupID)
	if err != nil {
		return nil, fmt.Errorf("lag: %w", err)
	}
	gl := lags[groupID]
	if err := gl.Error(); err != nil {
		return nil, fmt.Errorf("lag: %w", err)
	}
	var lag []map[string]any
	for _, l := range gl.Lag.Sorted() {
		client := ""
		if l.Member != nil {
			client = l.Member.ClientID
		}
		errText := ""
		if l.Err != nil {
			errText = l.Err.Error()
		}
		lag = append(lag, map[string]any{"partition": l.Partition, "commit": l.Commit.At, "end": l.End.Offset,
			"lag": l.Lag, "member": client, "error": errText})
	}

	// member 1 leaves: member 0 takes its partitions over from the offsets member 1 committed
	members[1].cl.Close() // LeaveGroup
	for len(members[0].held()) < partitions {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("member 0 holds %v after member 1 left", members[0].held())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := produceValues(ctx, boot, topic, "w", n); err != nil {
		return nil, err
	}
	var alone []prog.Consumed
	for len(alone) < n {
		fs := members[0].cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("member 0 alone, after %d records: %w", len(alone), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			alone = append(alone, prog.Consumed{Member: 0, Value: string(r.Value), Partition: r.Partition, Offset: r.Offset})
		})
	}
	if err := members[0].cl.CommitUncommittedOffsets(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	members[0].cl.Close()
	fetched, err := kadmin.FetchOffsets(ctx, groupID)
	if err == nil {
		err = fetched.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("fetch offsets: %w", err)
	}
	afterLeave := offsets{}
	for p, r := range fetched[topic] {
		afterLeave[p] = r.At
	}
	after, err := kadmin.DescribeGroups(ctx, groupID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"held": held, "consumed": got, "state": dg.State, "protocol_type": dg.ProtocolType,
		"protocol": dg.Protocol, "members": describedMembers, "lag": lag, "consumed_alone": alone,
		"committed_after_leave": afterLeave, "state_after_leave": after[groupID].State}, nil
}

// produceValues produces n keyed records prefix0, prefix1, ... to topic.
func produceValues(ctx context.Context, boot, topic, prefix string, n int) error {
	producer, err := newClient(boot, kgo.DefaultProduceTopic(topic))
	if err != nil {
		return err
	}
	defer producer.Close()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("%s%d", prefix, i))})
	}
	return producer.ProduceSync(ctx, recs...).FirstErr()
}

func txn(ctx context.Context, boot, in, out, groupID string, n int) (any, error) {
	if err := createTopic(ctx, boot, in, 3); err != nil {
		return nil, err
	}
	if err := createTopic(ctx, boot, out, 1); err != nil {
		return nil, err
	}
	producer, err := newClient(boot, kgo.DefaultProduceTopic(in))
	if err != nil {
		return nil, err
	}
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("in-%d", i))})
	}
	err = producer.ProduceSync(ctx, recs...).FirstErr()
	producer.Close()
	if err != nil {
		return nil, err
	}

	// consume-transform-produce: the input's offsets are committed in the transaction of the output
	sess, err := kgo.NewGroupTransactSession(append(common(boot), kgo.TransactionalID(groupID+"-ctp"), kgo.ConsumerGroup(groupID), kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(), kgo.DefaultProduceTopic(out))...)
	if err != nil {
		return nil, err
	}
	transformed, transactions := 0, 0
	for transformed < n {
		fs := sess.PollRecords(ctx, 7) // a few transactions, not one
		if err := fs.Err0(); err != nil {
			sess.Close()
			return nil, fmt.Errorf("poll after %d records: %w", transformed, err)
		}
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			sess.Close()
			return nil, err
		}
		var outs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			outs = append(outs, &kgo.Record{Key: r.Key, Value: append([]byte("out-"), bytes.TrimPrefix(r.Value, []byte("in-"))...)})
		})
		perr := sess.ProduceSync(ctx, outs...).FirstErr()
		committed, err := sess.End(ctx, kgo.TransactionEndTry(perr == nil))
		if err == nil {
			err = perr
		}
		if err != nil || !committed {
			sess.Close()
			return nil, fmt.Errorf("transaction not committed (%v)", err)
		}
		transformed += len(outs)
		transactions++
	}
	sess.Close()

	// a plain transactional producer: one transaction aborted, then one committed
	tp, err := newClient(boot, kgo.TransactionalID(groupID+"-plain"), kgo.DefaultProduceTopic(out))
	if err != nil {
		return nil, err
	}
	defer tp.Close()
	for _, end := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		if err := tp.BeginTransaction(); err != nil {
			return nil, err
		}
		word := map[kgo.TransactionEndTry]string{kgo.TryAbort: "aborted", kgo.TryCommit: "committed"}[end]
		for i := range 3 {
			if err := tp.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("%s-%d", word, i))}).FirstErr(); err != nil {
				return nil, err
			}
		}
		if err := tp.EndTransaction(ctx, end); err != nil {
			return nil, fmt.Errorf("end transaction (%s): %w", word, err)
		}
	}

	adm := kadm.NewClient(tp)
	fetched, err := adm.FetchOffsets(ctx, groupID)
	if err == nil {
		err = fetched.Error()
	}
	if err != nil {
		return nil, err
	}
	committed := offsets{}
	for p, r := range fetched[in] {
		committed[p] = r.At
	}
	txns, err := adm.DescribeTransactions(ctx, groupID+"-plain", groupID+"-ctp")
	if err != nil {
		return nil, fmt.Errorf("describe transactions: %w", err)
	}
	states := map[string]string{}
	for id, t := range txns {
		states[id] = t.State
		if t.Err != nil {
			states[id] = t.Err.Error()
		}
	}

	readCommitted, err := readAll(ctx, boot, out, "committed-2", kgo.ReadCommitted())
	if err != nil {
		return nil, err
	}
	readUncommitted, err := readAll(ctx, boot, out, "committed-2", kgo.ReadUncommitted())
	if err != nil {
		return nil, err
	}
	return map[string]any{"transformed": transformed, "transactions": transactions, "committed": committed,
		"txn_states": states, "requests": written.snapshot(), "read_committed": readCommitted,
		"read_uncommitted": readUncommitted}, nil
}

// readAll is the values of partition 0 of topic, read from the start with an isolation level up to the
// value last, the last record written (Kafka writes a transaction's markers after EndTxn has answered,
// so a read_committed consumer may have to wait for it), or until a poll comes back empty for a second.
func readAll(ctx context.Context, boot, topic, last string, level kgo.IsolationLevel) ([]string, error) {
	cl, err := newClient(boot, kgo.FetchIsolationLevel(level),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var values []string
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := fs.Err0(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return values, nil
			}
			return nil, err
		}
		fs.EachRecord(func(r *kgo.Record) { values = append(values, string(r.Value)) })
		if slices.Contains(values, last) {
			return values, nil
		}
	}
}
