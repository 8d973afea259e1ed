-- Fleet health as the doctor judges it, its diagnoses and remediations (from CONTROL), and the
-- usage of each workload against its requests with a sizing recommendation (from the agents'
-- health reports on FLEET_EVENTS). Every time comes from an event.

-- The current health of each cluster (the newest HealthChanged).
CREATE TABLE cluster_health (
    cluster_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    previous    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    since       TIMESTAMPTZ NOT NULL,
    seq         BIGINT NOT NULL
);

-- Every transition, in CONTROL order.
CREATE TABLE health_history (
    seq         BIGINT PRIMARY KEY,
    cluster_id  TEXT NOT NULL,
    previous    TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX health_history_cluster ON health_history (cluster_id, seq);

CREATE TABLE diagnoses (
    id                  TEXT PRIMARY KEY,
    cluster_id          TEXT NOT NULL,
    rule                TEXT NOT NULL,
    severity            TEXT NOT NULL,
    summary             TEXT NOT NULL,
    evidence            JSONB NOT NULL,
    subject             TEXT NOT NULL,
    suggested_playbook  TEXT NOT NULL,
    raised_at           TIMESTAMPTZ NOT NULL,
    cleared_at          TIMESTAMPTZ,
    clear_reason        TEXT,
    seq                 BIGINT NOT NULL
);
CREATE INDEX diagnoses_open ON diagnoses (cluster_id) WHERE cleared_at IS NULL;

-- state: proposed, approved, rejected, requested (the command is asked of cnc), suppressed.
CREATE TABLE remediations (
    id               TEXT PRIMARY KEY,
    cluster_id       TEXT NOT NULL,
    diagnosis_id     TEXT NOT NULL,
    playbook         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    target           TEXT NOT NULL,
    reason           TEXT NOT NULL,
    auto             BOOLEAN NOT NULL,
    state            TEXT NOT NULL,
    proposed_at      TIMESTAMPTZ NOT NULL,
    decided_by       TEXT,
    decided_at       TIMESTAMPTZ,
    decision_reason  TEXT,
    command_id       TEXT,
    requested_at     TIMESTAMPTZ,
    seq              BIGINT NOT NULL
);
CREATE INDEX remediations_cluster ON remediations (cluster_id, proposed_at);

-- Proposals the limits did not allow (rate or blast radius).
CREATE TABLE remediation_suppressions (
    seq           BIGINT PRIMARY KEY,
    cluster_id    TEXT NOT NULL,
    diagnosis_id  TEXT NOT NULL,
    playbook      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at            TIMESTAMPTZ NOT NULL
);

-- Usage against requests and limits per workload, from each cluster's newest health report that
-- had metrics, with the recommendation derived from it.
CREATE TABLE workload_recommendations (
    cluster_id                  TEXT NOT NULL,
    kind                        TEXT NOT NULL,
    namespace                   TEXT NOT NULL,
    name                        TEXT NOT NULL,
    replicas                    INTEGER NOT NULL,
    cpu_usage_millis            BIGINT NOT NULL,
    cpu_request_millis          BIGINT NOT NULL,
    cpu_limit_millis            BIGINT NOT NULL,
    memory_usage_bytes          BIGINT NOT NULL,
    memory_request_bytes        BIGINT NOT NULL,
    memory_limit_bytes          BIGINT NOT NULL,
    recommended_replicas        INTEGER NOT NULL,
    recommended_cpu_request_millis    BIGINT NOT NULL,
    recommended_memory_request_bytes  BIGINT NOT NULL,
    recommendation              TEXT NOT NULL,
    reported_at                 TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cluster_id, kind, namespace, name)
);
