// A transactional Kafka Java producer (kafka-clients 4.3.1) driven line by line from stdin,
// for tests/test_transactions_v2.py (transactions version 2, KIP-890 part 2).
//
//   java -cp 'tests/java/lib/*' tests/java/TxnV2Producer.java BOOTSTRAP TRANSACTIONAL_ID [TIMEOUT_MS]
//
// Commands, one per line; each answers one JSON line {"op": ..., ...}, with "error" (the
// exception's class) and "message" when it failed:
//   init                                  initTransactions()
//   begin                                 beginTransaction()
//   send TOPIC PARTITION VALUE            send() and wait for the ack: {"offset": ...}
//   offsets GROUP TOPIC PARTITION OFFSET  sendOffsetsToTransaction()
//   commit | abort                        commitTransaction() / abortTransaction()
//   tv2                                   whether the client uses transactions version 2
//   close                                 close() and exit

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.TransactionManager;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnV2Producer {
    static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("transactional.id", args[1]);
        props.put("transaction.timeout.ms", args.length > 2 ? args[2] : "60000");
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        props.put("linger.ms", "0");
        props.put("max.block.ms", "30000");
        props.put("delivery.timeout.ms", "30000");
        props.put("request.timeout.ms", "10000");
        props.put("retry.backoff.ms", "50");
        KafkaProducer<String, String> producer = new KafkaProducer<>(props);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] w = line.trim().split(" ");
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("op", w[0]);
            try {
                switch (w[0]) {
                    case "init" -> producer.initTransactions();
                    case "begin" -> producer.beginTransaction();
                    case "send" -> {
                        RecordMetadata md = producer.send(
                                new ProducerRecord<>(w[1], Integer.parseInt(w[2]), null, w[3])).get();
                        out.put("offset", md.offset());
                    }
                    case "offsets" -> producer.sendOffsetsToTransaction(
                            Map.of(new TopicPartition(w[2], Integer.parseInt(w[3])),
                                   new OffsetAndMetadata(Long.parseLong(w[4]))),
                            new ConsumerGroupMetadata(w[1], -1, "", java.util.Optional.empty()));
                    case "commit" -> producer.commitTransaction();
                    case "abort" -> producer.abortTransaction();
                    case "tv2" -> out.put("tv2", transactionManager(producer).isTransactionV2Enabled());
                    case "close" -> {
                        producer.close(Duration.ofSeconds(5));
                        System.out.println(JSON.writeValueAsString(out));
                        return;
                    }
                    default -> throw new IllegalArgumentException("unknown command " + w[0]);
                }
            } catch (Exception e) {
                Throwable cause = e.getCause() != null && e instanceof java.util.concurrent.ExecutionException
                        ? e.getCause() : e;
                out.put("error", cause.getClass().getSimpleName());
                out.put("message", String.valueOf(cause.getMessage()));
            }
            System.out.println(JSON.writeValueAsString(out));
            System.out.flush();
        }
        producer.close(Duration.ofSeconds(5));
    }

    /** The producer's TransactionManager: whether it took transactions version 2 from ApiVersions. */
    static TransactionManager transactionManager(KafkaProducer<?, ?> producer) throws Exception {
        Field f = KafkaProducer.class.getDeclaredField("transactionManager");
        f.setAccessible(true);
        return (TransactionManager) f.get(producer);
    }
}
