"""The web console (issue 19): see and operate any Kafka cluster in a browser.

A small aiohttp server (`odradek console`, or `odradek serve --console` beside the
broker) with a JSON API and plain HTML/CSS/JS pages shipped in the wheel (static/).
It reaches the cluster only through the Kafka protocol: confluent-kafka's AdminClient,
Producer and Consumer, and kio requests for what librdkafka does not offer
(ListTransactions, DescribeTransactions, DescribeLogDirs, DescribeUserScramCredentials),
so it works against Apache Kafka as well as odradek.

Rooms: `browse` (pure helpers: paging cursors, decoding, rates), `session` (one set of
clients per login), `ops` (admin and data operations), `wire` (kio requests), `web`
(the HTTP routes, sessions and the loopback guard).
"""
