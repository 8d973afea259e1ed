-- Read models of the fleet, written only by ingestion and rebuilt from FLEET_EVENTS.

-- Last applied stream sequence per projection, written in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    stream        TEXT        NOT NULL,
    consumer      TEXT        NOT NULL,
    last_sequence BIGINT      NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer)
);

CREATE TABLE clusters (
    id             TEXT        PRIMARY KEY,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    last_event_at  TIMESTAMPTZ NOT NULL,
    -- FLEET_EVENTS sequence of the newest event applied for this cluster.
    last_event_seq BIGINT      NOT NULL
);

-- The current agent of each cluster.
CREATE TABLE agents (
    cluster_id                 TEXT        PRIMARY KEY REFERENCES clusters (id),
    agent_instance_id          TEXT        NOT NULL,
    agent_version              TEXT        NOT NULL DEFAULT '',
    kubernetes_version         TEXT        NOT NULL DEFAULT '',
    started_at                 TIMESTAMPTZ,
    heartbeat_interval_seconds INTEGER     NOT NULL DEFAULT 0,
    last_heartbeat_at          TIMESTAMPTZ,
    -- Sequence of the newest heartbeat of this instance, and how many were received: the
    -- difference is the number of heartbeats lost.
    last_heartbeat_seq         BIGINT      NOT NULL DEFAULT 0,
    heartbeats_received        BIGINT      NOT NULL DEFAULT 0,
    node_count                 INTEGER     NOT NULL DEFAULT 0,
    pod_count                  INTEGER     NOT NULL DEFAULT 0
);

-- One row per Kubernetes object of the newest inventory snapshots.
CREATE TABLE inventory (
    cluster_id       TEXT        NOT NULL REFERENCES clusters (id),
    kind             TEXT        NOT NULL,
    namespace        TEXT        NOT NULL DEFAULT '',
    name             TEXT        NOT NULL,
    api_version      TEXT        NOT NULL,
    uid              TEXT        NOT NULL DEFAULT '',
    resource_version TEXT        NOT NULL DEFAULT '',
    labels           JSONB       NOT NULL DEFAULT '{}',
    owner_kind       TEXT        NOT NULL DEFAULT '',
    owner_name       TEXT        NOT NULL DEFAULT '',
    digest           TEXT        NOT NULL DEFAULT '',
    attributes       JSONB       NOT NULL DEFAULT '{}',
    created_at       TIMESTAMPTZ,
    snapshot_id      TEXT        NOT NULL,
    PRIMARY KEY (cluster_id, kind, namespace, name)
);
CREATE INDEX inventory_snapshot ON inventory (cluster_id, snapshot_id);

-- The newest complete inventory snapshot of each cluster.
CREATE TABLE inventory_snapshots (
    cluster_id     TEXT        PRIMARY KEY REFERENCES clusters (id),
    snapshot_id    TEXT        NOT NULL,
    completed_at   TIMESTAMPTZ NOT NULL,
    total_objects  BIGINT      NOT NULL,
    -- {"Pod": 40, "Node": 3, ...}
    counts_by_kind JSONB       NOT NULL DEFAULT '{}'
);
