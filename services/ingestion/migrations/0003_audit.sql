-- Audits, findings and posture (from FLEET_EVENTS), policies and derogations (from CONTROL).
-- Text columns that page tokens compare use the "C" collation: byte order, whatever the
-- database's default.

-- One row per audit of a cluster.
CREATE TABLE audits (
    cluster_id       TEXT COLLATE "C" NOT NULL,
    audit_id         TEXT COLLATE "C" NOT NULL,
    -- interval | command | policy | watch | startup
    trigger          TEXT        NOT NULL DEFAULT '',
    -- full | incremental
    scope            TEXT        NOT NULL DEFAULT '',
    -- running | completed | incomplete (some FindingsChunks never arrived, or a later audit
    -- completed while this one never did)
    state            TEXT        NOT NULL,
    policy_version   BIGINT      NOT NULL DEFAULT 0,
    command_id       TEXT        NOT NULL DEFAULT '',
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    duration_ms      INTEGER     NOT NULL DEFAULT 0,
    chunks           INTEGER     NOT NULL DEFAULT 0,
    chunks_received  INTEGER     NOT NULL DEFAULT 0,
    objects_audited  BIGINT      NOT NULL DEFAULT 0,
    findings         BIGINT      NOT NULL DEFAULT 0,
    exempted         BIGINT      NOT NULL DEFAULT 0,
    -- {"critical": 1, "high": 4, ...}: findings not exempted, by severity
    open_by_severity JSONB       NOT NULL DEFAULT '{}',
    kinds_skipped    TEXT[]      NOT NULL DEFAULT '{}',
    -- Incremental audits: [{"api_version", "kind", "namespace", "name"}, ...]
    objects          JSONB       NOT NULL DEFAULT '[]',
    -- FLEET_EVENTS sequence of the first event seen of this audit: the listing order.
    first_seq        BIGINT      NOT NULL,
    PRIMARY KEY (cluster_id, audit_id)
);
CREATE INDEX audits_order ON audits (first_seq DESC);
CREATE INDEX audits_cluster_order ON audits (cluster_id, first_seq DESC);

-- FindingsChunks of audits not completed yet (emptied when the audit completes).
CREATE TABLE audit_chunks (
    cluster_id  TEXT    NOT NULL,
    audit_id    TEXT    NOT NULL,
    chunk_index INTEGER NOT NULL,
    PRIMARY KEY (cluster_id, audit_id, chunk_index)
);

CREATE TABLE audit_findings (
    cluster_id     TEXT        NOT NULL,
    audit_id       TEXT        NOT NULL,
    chunk_index    INTEGER     NOT NULL,
    position       INTEGER     NOT NULL,
    fingerprint    TEXT        NOT NULL,
    check_id       TEXT        NOT NULL,
    severity       TEXT        NOT NULL,
    standards      TEXT[]      NOT NULL,
    api_version    TEXT        NOT NULL,
    kind           TEXT        NOT NULL,
    namespace      TEXT        NOT NULL,
    name           TEXT        NOT NULL,
    container      TEXT        NOT NULL,
    path           TEXT        NOT NULL,
    message        TEXT        NOT NULL,
    remediation    TEXT        NOT NULL,
    application    TEXT        NOT NULL,
    derogation_id  TEXT        NOT NULL,
    exempted_until TIMESTAMPTZ,
    PRIMARY KEY (cluster_id, audit_id, chunk_index, position)
);
CREATE INDEX audit_findings_fingerprint ON audit_findings (cluster_id, audit_id, fingerprint);

CREATE TABLE audit_object_counts (
    cluster_id  TEXT   NOT NULL,
    audit_id    TEXT   NOT NULL,
    namespace   TEXT   NOT NULL,
    application TEXT   NOT NULL,
    objects     BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, audit_id, namespace, application)
);

-- The current findings of each cluster: one row per fingerprint (cluster, check, object, path).
CREATE TABLE findings (
    cluster_id        TEXT COLLATE "C" NOT NULL,
    fingerprint       TEXT COLLATE "C" NOT NULL,
    check_id          TEXT COLLATE "C" NOT NULL,
    severity          TEXT        NOT NULL,
    -- 4 critical, 3 high, 2 medium, 1 low: the listing order
    severity_rank     SMALLINT    NOT NULL,
    standards         TEXT[]      NOT NULL,
    api_version       TEXT        NOT NULL,
    kind              TEXT COLLATE "C" NOT NULL,
    namespace         TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C" NOT NULL,
    container         TEXT        NOT NULL,
    path              TEXT        NOT NULL,
    message           TEXT        NOT NULL,
    remediation       TEXT        NOT NULL,
    application       TEXT        NOT NULL,
    -- open | exempted | resolved
    state             TEXT        NOT NULL,
    derogation_id     TEXT        NOT NULL DEFAULT '',
    exempted_until    TIMESTAMPTZ,
    first_seen_at     TIMESTAMPTZ NOT NULL,
    last_seen_at      TIMESTAMPTZ NOT NULL,
    resolved_at       TIMESTAMPTZ,
    first_audit_id    TEXT        NOT NULL,
    -- The last audit that reported it or resolved it.
    last_audit_id     TEXT        NOT NULL,
    PRIMARY KEY (cluster_id, fingerprint)
);
CREATE INDEX findings_order ON findings (severity_rank DESC, cluster_id, namespace, kind, name, check_id, fingerprint);
CREATE INDEX findings_object ON findings (cluster_id, kind, namespace, name);
CREATE INDEX findings_scope ON findings (namespace, application) WHERE state <> 'resolved';

-- Every change of state of a finding: opened, reopened (resolved or exempted -> open),
-- exempted, resolved.
CREATE TABLE finding_history (
    cluster_id  TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    audit_id    TEXT        NOT NULL,
    -- FLEET_EVENTS sequence of the AuditCompleted that made the change.
    seq         BIGINT      NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT        NOT NULL,
    from_state  TEXT,
    to_state    TEXT        NOT NULL,
    PRIMARY KEY (cluster_id, fingerprint, audit_id)
);
CREATE INDEX finding_history_time ON finding_history (cluster_id, at);

-- Posture at each completed full audit: per (namespace, application), the objects audited and
-- the open and exempted findings by severity.
CREATE TABLE posture_history (
    cluster_id         TEXT        NOT NULL,
    audit_id           TEXT        NOT NULL,
    at                 TIMESTAMPTZ NOT NULL,
    namespace          TEXT        NOT NULL,
    application        TEXT        NOT NULL,
    objects            BIGINT      NOT NULL,
    open_critical      BIGINT      NOT NULL,
    open_high          BIGINT      NOT NULL,
    open_medium        BIGINT      NOT NULL,
    open_low           BIGINT      NOT NULL,
    exempted_critical  BIGINT      NOT NULL,
    exempted_high      BIGINT      NOT NULL,
    exempted_medium    BIGINT      NOT NULL,
    exempted_low       BIGINT      NOT NULL,
    PRIMARY KEY (cluster_id, audit_id, namespace, application)
);
CREATE INDEX posture_history_time ON posture_history (cluster_id, at);

-- The newest completed full audit of each cluster (current object counts of posture_history).
CREATE TABLE posture_current (
    cluster_id TEXT        PRIMARY KEY,
    audit_id   TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);

-- Every version of the fleet policy (CONTROL PolicyChanged).
CREATE TABLE policies (
    version                   BIGINT      PRIMARY KEY,
    disabled_checks           TEXT[]      NOT NULL,
    severity_overrides        JSONB       NOT NULL,
    registry_allow_list       TEXT[]      NOT NULL,
    honour_ignore_annotations BOOLEAN     NOT NULL,
    level                     TEXT        NOT NULL,
    changed_by                TEXT        NOT NULL,
    reason                    TEXT        NOT NULL,
    changed_at                TIMESTAMPTZ NOT NULL,
    control_seq               BIGINT      NOT NULL
);

-- Derogations (CONTROL DerogationGranted / DerogationRevoked).
CREATE TABLE derogations (
    derogation_id  TEXT COLLATE "C" PRIMARY KEY,
    check_id       TEXT        NOT NULL DEFAULT '',
    cluster_labels JSONB       NOT NULL DEFAULT '{}',
    cluster_id     TEXT        NOT NULL DEFAULT '',
    namespace      TEXT        NOT NULL DEFAULT '',
    workload_kind  TEXT        NOT NULL DEFAULT '',
    workload_name  TEXT        NOT NULL DEFAULT '',
    container      TEXT        NOT NULL DEFAULT '',
    reason         TEXT        NOT NULL DEFAULT '',
    approver       TEXT        NOT NULL DEFAULT '',
    expires_at     TIMESTAMPTZ,
    granted_by     TEXT        NOT NULL DEFAULT '',
    granted_at     TIMESTAMPTZ,
    granted_seq    BIGINT      NOT NULL DEFAULT 0,
    revoked_at     TIMESTAMPTZ,
    revoked_by     TEXT        NOT NULL DEFAULT '',
    revoke_reason  TEXT        NOT NULL DEFAULT '',
    revoked_seq    BIGINT      NOT NULL DEFAULT 0
);
CREATE INDEX derogations_order ON derogations (granted_seq DESC);
