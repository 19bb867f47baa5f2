// Kafka Streams word count with exactly_once_v2, run by tests/test_kafka_streams.py as a single-file program:
//   java -Xmx256m -cp 'tests/java/lib/*' tests/java/StreamsWordCount.java BOOTSTRAP APP_ID INPUT OUTPUT STATE_DIR [INSTANCE_ID]
// groupBy -> count makes Streams create its own repartition topic (APP_ID-counts-repartition) and changelog
// (APP_ID-counts-changelog). INSTANCE_ID makes the instance a static group member (KIP-345; its
// thread's consumer is INSTANCE_ID-1), as in a StatefulSet: restarted, it takes its old place at once
// instead of waiting for the killed member's session to expire. Each state change is printed on
// stdout ("STATE RUNNING"), so is an uncaught exception ("FATAL ..."), since the test classpath has
// no SLF4J binding and Kafka's own logs go nowhere.

import java.time.Duration;
import java.util.Arrays;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

public class StreamsWordCount {
    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: StreamsWordCount BOOTSTRAP APP_ID INPUT OUTPUT STATE_DIR [INSTANCE_ID]");
            System.exit(2);
        }
        String bootstrap = args[0], appId = args[1], input = args[2], output = args[3], stateDir = args[4];

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        // Purge the repartition topic (DeleteRecords up to the committed offsets) often, not every 30 s.
        props.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 500);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        if (args.length > 5) {
            props.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), args[5]);
            // longer than a restart takes, as static membership is meant to be run
            props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 60000);
        } else {
            props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        }
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 500);

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> lines = builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()));
        lines.flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
             .filter((k, word) -> !word.isEmpty())
             .groupBy((k, word) -> word, Grouped.with("counts", Serdes.String(), Serdes.String()))
             .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts")
                     .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
             .toStream()
             .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println("STATE " + now);
            System.out.flush();
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.out.println("FATAL " + e);
            e.printStackTrace(System.out);
            System.out.flush();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM: leave the group at once (the next instance, or the reset tool, finds it empty)
        CloseOptions leave = CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(Duration.ofSeconds(10));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(leave)));
        streams.start();
        done.await();
        streams.close(leave);
        System.exit(streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
    }
}
