// Command sarama drives IBM Sarama against a broker for tests/test_go_clients.py. VERSION is the
// Kafka version Sarama is configured for ("default" keeps Sarama's config.Version, older request
// versions; "max" is the newest Sarama knows). Each sub-command prints one JSON object on stdout;
// any client error ends it with exit code 1 and the error on stderr.
//
//	sarama admin VERSION BOOTSTRAP TOPIC          ClusterAdmin: create, describe topic and configs, partitions
//	sarama produce VERSION BOOTSTRAP TOPIC N      SyncProducer with WaitForAll, keyed records with headers
//	sarama group VERSION BOOTSTRAP TOPIC GROUP N  a ConsumerGroup of two members, commits fetched back
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"odradek/tests/go/internal/prog"
)

func main() {
	if len(os.Args) < 5 {
		prog.Fail(errors.New("usage: sarama admin|produce|group VERSION BOOTSTRAP ARGS..."))
	}
	if os.Getenv("GO_CLIENT_LOG") != "" { // Sarama's log on stderr
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
	cfg := sarama.NewConfig()
	switch v := os.Args[2]; v {
	case "default":
	case "max":
		cfg.Version = sarama.MaxVersion
	default:
		version, err := sarama.ParseKafkaVersion(v)
		if err != nil {
			prog.Fail(err)
		}
		cfg.Version = version
	}
	cfg.ClientID = "sarama-test"
	cfg.Consumer.MaxWaitTime = 200 * time.Millisecond
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	// rejoin soon after a SyncGroup cut short by another member's join (Sarama's default is 2 s)
	cfg.Consumer.Group.Rebalance.Retry.Backoff = 200 * time.Millisecond
	// not a proxy: a dialer that notes the version of every request Sarama sends
	cfg.Net.Proxy.Enable = true
	cfg.Net.Proxy.Dialer = recordingDialer{}
	boot, args := []string{os.Args[3]}, os.Args[4:]
	var out any
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		switch os.Args[1] {
		case "admin":
			out, err = admin(cfg, boot, args[0])
		case "produce":
			out, err = produce(cfg, boot, args[0], prog.Atoi(args[1]))
		case "group":
			out, err = group(cfg, boot, args[0], args[1], prog.Atoi(args[2]))
		default:
			err = fmt.Errorf("unknown sub-command %q", os.Args[1])
		}
	}()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		err = errors.New("timed out after 45 s")
	}
	if err != nil {
		prog.Fail(err)
	}
	if m, ok := out.(map[string]any); ok {
		m["request_versions"] = sent.seen()
	}
	prog.Print(out)
}

// sent holds the (API key, version) of every request frame written to a broker.
var sent = &requestLog{versions: map[int16]map[int16]bool{}}

type requestLog struct {
	mu       sync.Mutex
	versions map[int16]map[int16]bool
}

func (l *requestLog) add(key, version int16) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.versions[key] == nil {
		l.versions[key] = map[int16]bool{}
	}
	l.versions[key][version] = true
}

// seen is API key -> the versions sent, sorted.
func (l *requestLog) seen() map[int16][]int16 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int16][]int16{}
	for key, vs := range l.versions {
		for v := range vs {
			out[key] = append(out[key], v)
		}
		slices.Sort(out[key])
	}
	return out
}

type recordingDialer struct{}

func (recordingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c}, nil
}

// recordingConn reads the request header (size, api_key, api_version) off each frame it writes.
type recordingConn struct {
	net.Conn
	pending []byte
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.pending = append(c.pending, b...)
	for len(c.pending) >= 8 {
		size := int(binary.BigEndian.Uint32(c.pending))
		if len(c.pending) < 4+size {
			break
		}
		sent.add(int16(binary.BigEndian.Uint16(c.pending[4:])), int16(binary.BigEndian.Uint16(c.pending[6:])))
		c.pending = c.pending[4+size:]
	}
	return c.Conn.Write(b)
}

func admin(cfg *sarama.Config, boot []string, topic string) (any, error) {
	adm, err := sarama.NewClusterAdmin(boot, cfg)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	retention := "3600000"
	detail := &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}
	if err := adm.CreateTopic(topic, detail, false); err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}
	againErr := ""
	if err := adm.CreateTopic(topic, detail, false); err != nil {
		againErr = err.Error()
	}
	if err := adm.CreatePartitions(topic, 3, nil, false); err != nil {
		return nil, fmt.Errorf("create partitions: %w", err)
	}

	// Kafka's brokers learn of new partitions after the controller answered: describe until they show
	var described []*sarama.TopicMetadata
	for deadline := time.Now().Add(10 * time.Second); ; {
		described, err = adm.DescribeTopics([]string{topic})
		if err != nil {
			return nil, fmt.Errorf("describe topics: %w", err)
		}
		if len(described) != 1 || len(described[0].Partitions) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var partitions []map[string]any
	describeErr := ""
	for _, t := range described {
		if t.Err != sarama.ErrNoError {
			describeErr = t.Err.Error()
		}
		for _, p := range t.Partitions {
			partitions = append(partitions, map[string]any{"partition": p.ID, "leader": p.Leader,
				"replicas": p.Replicas, "isr": p.Isr, "error": int(p.Err)})
		}
	}
	slices.SortFunc(partitions, func(a, b map[string]any) int { return int(a["partition"].(int32) - b["partition"].(int32)) })

	entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic,
		ConfigNames: []string{"retention.ms", "cleanup.policy"}})
	if err != nil {
		return nil, fmt.Errorf("describe config: %w", err)
	}
	configs := map[string]map[string]any{}
	for _, e := range entries {
		configs[e.Name] = map[string]any{"value": e.Value, "default": e.Default, "source": e.Source.String()}
	}

	topics, err := adm.ListTopics()
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	brokers, controller, err := adm.DescribeCluster()
	if err != nil {
		return nil, fmt.Errorf("describe cluster: %w", err)
	}
	var brokerIDs []int32
	for _, b := range brokers {
		brokerIDs = append(brokerIDs, b.ID())
	}
	return map[string]any{"create_again_error": againErr, "describe_error": describeErr, "partitions": partitions,
		"configs": configs, "listed_partitions": topics[topic].NumPartitions, "brokers": brokerIDs,
		"controller": controller}, nil
}

type produced struct {
	Key       string `json:"key"`
	Value     string `json:"value"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

func produce(cfg *sarama.Config, boot []string, topic string, n int) (any, error) {
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer(boot, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range n {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("key-%d", i%5)),
			Value:   sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
			Headers: []sarama.RecordHeader{{Key: []byte("seq"), Value: []byte(strconv.Itoa(i))}}}
	}
	// one by one: SendMessage returns after its acknowledgement, so the offsets follow the order sent
	out := make([]produced, n)
	for i, m := range msgs {
		partition, offset, err := p.SendMessage(m)
		if err != nil {
			return nil, fmt.Errorf("send %d: %w", i, err)
		}
		out[i] = produced{fmt.Sprintf("key-%d", i%5), fmt.Sprintf("value-%d", i), partition, offset}
	}
	return map[string]any{"records": out}, nil
}

// member is a ConsumerGroupHandler: it remembers its session (generation, claims) and hands every
// message to the shared list, marking it for the commit.
type member struct {
	id      int
	topic   string
	mu      sync.Mutex
	session sarama.ConsumerGroupSession
	sink    func(prog.Consumed)
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.session = s
	return nil
}

func (m *member) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.session = nil
	return nil
}

func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			m.sink(prog.Consumed{Member: m.id, Value: string(msg.Value), Partition: msg.Partition, Offset: msg.Offset})
			s.MarkMessage(msg, "")
		case <-s.Context().Done():
			return nil
		}
	}
}

// current is the member's generation and claimed partitions, or -1 between sessions.
func (m *member) current() (int32, []int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.session == nil {
		return -1, nil
	}
	ps := slices.Clone(m.session.Claims()[m.topic])
	slices.Sort(ps)
	return m.session.GenerationID(), ps
}

func group(cfg *sarama.Config, boot []string, topic, groupID string, n int) (any, error) {
	const partitions = 3
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	adm, err := sarama.NewClusterAdmin(boot, cfg)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}

	var mu sync.Mutex
	var got []prog.Consumed
	reached := make(chan struct{})
	sink := func(c prog.Consumed) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c)
		if len(got) == n {
			close(reached)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	members := make([]*member, 2)
	groups := make([]sarama.ConsumerGroup, 2)
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for i := range members {
		members[i] = &member{id: i, topic: topic, sink: sink}
		groups[i], err = sarama.NewConsumerGroup(boot, groupID, cfg)
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := groups[i].Consume(ctx, []string{topic}, members[i]); err != nil {
					errs <- fmt.Errorf("member %d: %w", i, err)
					return
				}
			}
		})
	}
	// Both members in the same generation, together holding every partition, before anything is produced.
	var held [][]int32
	for deadline := time.Now().Add(30 * time.Second); ; {
		g0, a := members[0].current()
		g1, b := members[1].current()
		if g0 >= 0 && g0 == g1 && len(a) > 0 && len(b) > 0 && len(a)+len(b) == partitions {
			held = [][]int32{a, b}
			break
		}
		select {
		case err := <-errs:
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("generations %d and %d hold %v and %v of %d partitions", g0, g1, a, b, partitions)
		}
	}

	producer, err := sarama.NewSyncProducer(boot, cfg)
	if err != nil {
		return nil, err
	}
	var msgs []*sarama.ProducerMessage
	for i := range n {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value: sarama.StringEncoder(fmt.Sprintf("v%d", i))})
	}
	err = producer.SendMessages(msgs)
	producer.Close()
	if err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}
	select {
	case <-reached:
	case err := <-errs:
		return nil, err
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("consumed %d of %d records", len(got), n)
	}
	for _, m := range members {
		m.mu.Lock()
		if m.session != nil {
			m.session.Commit() // synchronous: OffsetCommit with every marked message
		}
		m.mu.Unlock()
	}

	fetched, err := fetchOffsets(adm, groupID, topic, partitions)
	if err != nil {
		return nil, err
	}
	descriptions, err := adm.DescribeConsumerGroups([]string{groupID})
	if err != nil {
		return nil, fmt.Errorf("describe consumer groups: %w", err)
	}
	d := descriptions[0]
	var describedMembers []map[string]any
	for _, dm := range d.Members {
		assignment, err := dm.GetMemberAssignment()
		if err != nil {
			return nil, fmt.Errorf("member assignment: %w", err)
		}
		ps := slices.Clone(assignment.Topics[topic])
		slices.Sort(ps)
		describedMembers = append(describedMembers, map[string]any{"client_id": dm.ClientId, "host": dm.ClientHost,
			"partitions": ps})
	}

	cancel()
	for _, g := range groups {
		if err := g.Close(); err != nil { // LeaveGroup
			return nil, err
		}
	}
	wg.Wait()
	afterLeave, err := fetchOffsets(adm, groupID, topic, partitions)
	if err != nil {
		return nil, err
	}

	client, err := sarama.NewClient(boot, cfg)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ends := map[int32]int64{}
	for p := range int32(partitions) {
		if ends[p], err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			return nil, fmt.Errorf("get offset: %w", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return map[string]any{"held": held, "consumed": got, "committed": fetched, "committed_after_leave": afterLeave,
		"end": ends, "state": d.State, "protocol_type": d.ProtocolType, "protocol": d.Protocol,
		"members": describedMembers}, nil
}

// fetchOffsets is the group's committed offsets as OffsetFetch answers them (-1: none).
func fetchOffsets(adm sarama.ClusterAdmin, groupID, topic string, partitions int32) (map[int32]int64, error) {
	var ps []int32
	for p := range partitions {
		ps = append(ps, p)
	}
	resp, err := adm.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: ps})
	if err != nil {
		return nil, fmt.Errorf("list consumer group offsets: %w", err)
	}
	out := map[int32]int64{}
	for _, p := range ps {
		block := resp.GetBlock(topic, p)
		if block == nil {
			return nil, fmt.Errorf("no offset for partition %d", p)
		}
		if block.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("offset fetch partition %d: %w", p, block.Err)
		}
		out[p] = block.Offset
	}
	return out, nil
}
