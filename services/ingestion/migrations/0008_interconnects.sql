-- Interconnect requests of leaf clusters and what became of them (from CONTROL): the leaf's
-- gateway asks (InterconnectRequested), an admin approves or rejects through the api, an
-- approved cluster may later be revoked (ClusterRevoked). Every time comes from an event.
--
-- status: pending, approved, rejected, revoked, superseded (a newer request of the same
-- cluster arrived while this one was pending).
CREATE TABLE interconnect_requests (
    request_id            TEXT PRIMARY KEY,
    cluster_id            TEXT NOT NULL,
    status                TEXT NOT NULL,
    link_user_public_key  TEXT NOT NULL,
    xkey_public_key       TEXT NOT NULL,
    labels                JSONB NOT NULL,
    -- leaf-dials, seed-dials or unspecified.
    direction             TEXT NOT NULL,
    trunk                 TEXT NOT NULL,
    leaf_url              TEXT NOT NULL,
    gateway_version       TEXT NOT NULL,
    requested_at          TIMESTAMPTZ NOT NULL,
    -- CONTROL sequence of the request.
    requested_seq         BIGINT NOT NULL,
    decided_at            TIMESTAMPTZ,
    decided_by            TEXT NOT NULL DEFAULT '',
    reason                TEXT NOT NULL DEFAULT '',
    -- CONTROL sequence of the last event that changed the row.
    updated_seq           BIGINT NOT NULL
);
CREATE INDEX interconnect_requests_cluster ON interconnect_requests (cluster_id, status);
CREATE INDEX interconnect_requests_newest ON interconnect_requests (requested_at DESC);
