"""ElectLeaders (KIP-183 preferred, KIP-460 unclean): v0 is preferred-only.

Needs ALTER on the cluster. Asked for every partition (null topics), Kafka answers only the
partitions that had an election or an error, not those whose leader is already right
(KafkaApis.handleElectLeaders). In cluster mode only the active controller elects
(cluster/elections.py, its writes fenced by the controller epoch); any other broker answers
NOT_CONTROLLER for each partition asked, as Kafka's ZooKeeper-mode controller does (the admin
clients send ElectLeaders to the controller named in Metadata). The single-node broker leads everything it has: every
partition answers ELECTION_NOT_NEEDED, as a one-broker Kafka would.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cluster.metadata import TopicError
from odradek.security.authorizer import AclOperation, ResourceType
from odradek.server.dispatcher import RequestContext

PREFERRED = 0


async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    election_type = getattr(request, "election_type", PREFERRED)
    everything = request.topic_partitions is None
    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):
        results = [] if everything else [
            {"topic": t.topic, "partition_result": [
                {"partition_id": p, "error_code": ErrorCode.cluster_authorization_failed,
                 "error_message": "Cluster authorization failed."} for p in t.partitions]}
            for t in request.topic_partitions]
        return ctx.respond(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed,
                           replica_election_results=results)
    topics = broker.topics()
    if everything:
        wanted = [(name, list(range(meta.partitions))) for name, meta in sorted(topics.items())]
    else:
        wanted = [(t.topic, list(dict.fromkeys(t.partitions))) for t in request.topic_partitions]
    elect = getattr(broker, "elect_leader", None)
    results = []
    for name, partitions in wanted:
        rows = []
        for p in partitions:
            meta = topics.get(name)
            try:
                if elect is not None:  # cluster mode: the controller checks the partition too
                    await elect(name, p, election_type)
                elif meta is None or not 0 <= p < meta.partitions:
                    raise TopicError("unknown_topic_or_partition", "The partition does not exist.")
                else:
                    raise TopicError("election_not_needed", "Leader election not needed for topic partition.")
                error, message = ErrorCode.none, None
            except TopicError as exc:
                error, message = ErrorCode[exc.code], str(exc)
            if everything and error == ErrorCode.election_not_needed:
                continue
            rows.append({"partition_id": p, "error_code": error, "error_message": message})
        if rows or not everything:
            results.append({"topic": name, "partition_result": rows})
    return ctx.respond(throttle_time=0, error_code=ErrorCode.none, replica_election_results=results)
