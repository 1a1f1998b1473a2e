"""Every manifest fact key and key prefix, once: who writes it, and how its value is encoded.

Each host writes facts only under its own origin. Values are msgpack maps (`catalog.pack`)
unless said otherwise; `<item>` is `<type>/<name>` (`catalog.check_item`).
"""

NODE = "node"  # every host, of itself (peer.py): its node record {role, address, ephemeral, disk_used_percent,
#   relays (a host nobody can dial: the hosts its links are up to), ...}
LEADER = "leader"  # a leader, when elected (election.py): {"t": term}
ALIVE = "alive"  # every host, of itself (membership.py): {"i": its liveness incarnation}
LEFT = "left"  # a host that leaves gracefully (membership.py): {"i": the incarnation it left at}
CLAIM = "m/"  # m/<host>: any host's claim about <host> (membership.py): {"s": "suspect" | "dead", "i": incarnation}
VERSION = "v/"  # v/<item>: the publisher of a version (peer.py): catalog.encode_version
HOLDING = "h/"  # h/<item>: every host holding a version (peer.py): catalog.encode_holding
PULLING = "p/"  # p/<item>: every host pulling a version (peer.py): catalog.encode_holding
DIRECTIVE = "b/"  # b/<item>: the leader broadcasting a version (broadcast.py): {"d": digest, "t": term}
HW = "g/"  # g/<origin>/<config_key>: every host with games of a stream (replication.py): streams.encode_hw
SCHEMA = "gs/"  # gs/<fingerprint>: the first host to take in a game schema (peer.py): gameschema.Schema.encode() bytes
HELD = "gh/"  # gh/<config_key>: a game host holding games back from its database (peer.py): {"s": {origin: [seqs]}}
LOST = "x/"  # x/<origin>/<config_key>: a host that found games of a stream lost on every holder (replication.py):
#   {"r": [[first, last], ...]} the ranges of seqs lost (streams.encode_lost); marks skip them from then on
BACKUP = "backup/"  # backup/<index>: the leader that ran backup <index> (peer.py, for node/backup.py): {term, ok, ...}

ITEM_PREFIXES = (VERSION, HOLDING, PULLING, DIRECTIVE)  # the prefixes followed by an item
