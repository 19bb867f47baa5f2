"""The fault campaign: brokers, a ZooKeeper ensemble and clients in network namespaces
(net, cluster), faults applied under load (nemesis), a checker of Kafka's guarantees
(checker) and the client workloads it reads (workers)."""
