"""One module per API family; ROUTES is the single table of what odradek speaks.

ApiVersions advertises exactly this table. Versions start where kio's generated
schemas start and stop where odradek implements and tests the semantics.
"""

from __future__ import annotations

from odradek.server.dispatcher import Route
from odradek.server.handlers import (
    acls,
    api_versions,
    configs,
    consumer_groups,
    delete_records,
    describe_cluster,
    describe_topic_partitions,
    elect_leaders,
    fetch,
    groups,
    list_offsets,
    log_dirs,
    metadata,
    offset_for_leader_epoch,
    offsets,
    produce,
    producer_ids,
    reassignment,
    sasl,
    scram_users,
    share_groups,
    share_offsets,
    share_state,
    topics,
    transactions,
)

ROUTES: dict[int, Route] = {
    0: Route(produce.handle, 0, 13),  # v0-2 answered UNSUPPORTED_VERSION, as Kafka 4 (KAFKA-18659)
    1: Route(fetch.handle, 4, 18),
    2: Route(list_offsets.handle, 0, 11),  # v0 (KIP-896 dropped it) for Sarama-based tools: legacy.py
    3: Route(metadata.handle, 0, 13),
    18: Route(api_versions.handle, 0, 4),
    19: Route(topics.create_topics, 2, 7),
    20: Route(topics.delete_topics, 1, 6),
    32: Route(configs.describe_configs, 1, 4),
    33: Route(configs.alter_configs, 0, 2),
    37: Route(topics.create_partitions, 0, 3),
    44: Route(configs.incremental_alter_configs, 0, 1),
    60: Route(describe_cluster.handle, 0, 2),
    75: Route(describe_topic_partitions.handle, 0, 0),
    22: Route(producer_ids.handle, 0, 6),
    23: Route(offset_for_leader_epoch.handle, 2, 4),
    8: Route(offsets.offset_commit, 0, 10),
    9: Route(offsets.offset_fetch, 0, 10),
    10: Route(groups.find_coordinator, 0, 6),
    11: Route(groups.join_group, 0, 9),
    12: Route(groups.heartbeat, 0, 4),
    13: Route(groups.leave_group, 0, 5),
    14: Route(groups.sync_group, 0, 5),
    15: Route(groups.describe_groups, 0, 6),
    16: Route(groups.list_groups, 0, 5),
    42: Route(groups.delete_groups, 0, 2),
    47: Route(offsets.offset_delete, 0, 0),
    68: Route(consumer_groups.consumer_group_heartbeat, 1, 1),  # KIP-848; v0 let the broker make member ids
    69: Route(consumer_groups.consumer_group_describe, 0, 1),
    21: Route(delete_records.handle, 0, 2),
    24: Route(transactions.add_partitions_to_txn, 0, 5),  # v4+: from brokers (KIP-890)
    25: Route(transactions.add_offsets_to_txn, 0, 4),
    26: Route(transactions.end_txn, 0, 5),
    27: Route(transactions.write_txn_markers, 1, 2),
    28: Route(transactions.txn_offset_commit, 0, 5),
    61: Route(transactions.describe_producers, 0, 0),
    65: Route(transactions.describe_transactions, 0, 0),
    66: Route(transactions.list_transactions, 0, 2),
    17: Route(sasl.sasl_handshake, 0, 1),
    36: Route(sasl.sasl_authenticate, 0, 2),
    50: Route(scram_users.describe_user_scram_credentials, 0, 0),
    51: Route(scram_users.alter_user_scram_credentials, 0, 0),
    29: Route(acls.describe_acls, 1, 3),  # kio has no v0 (Kafka 4 dropped it, KIP-896)
    30: Route(acls.create_acls, 1, 3),
    31: Route(acls.delete_acls, 1, 3),
    35: Route(log_dirs.handle, 1, 5),
    43: Route(elect_leaders.handle, 0, 2),
    45: Route(reassignment.alter_partition_reassignments, 0, 1),
    46: Route(reassignment.list_partition_reassignments, 0, 0),
    76: Route(share_groups.share_group_heartbeat, 1, 1),  # KIP-932 share groups
    77: Route(share_groups.share_group_describe, 1, 1),
    78: Route(share_groups.share_fetch, 1, 2),  # v2: RENEW acknowledgements (KIP-1222)
    79: Route(share_groups.share_acknowledge, 1, 2),
    90: Route(share_offsets.describe_share_group_offsets, 0, 1),
    91: Route(share_offsets.alter_share_group_offsets, 0, 0),
    92: Route(share_offsets.delete_share_group_offsets, 0, 0),
    84: Route(share_state.read_share_group_state, 0, 0),  # the share coordinator's inter-broker RPCs
    85: Route(share_state.write_share_group_state, 0, 1),
    86: Route(share_state.delete_share_group_state, 0, 0),
    83: Route(share_state.initialize_share_group_state, 0, 0),
    87: Route(share_state.read_share_group_state_summary, 0, 1),  # v1: delivery_complete_count (KIP-1226)
}
