-- Commands to clusters and cron schedules (cnc, api and agents' events). CONTROL (requests,
-- dispatches, rejections, time-outs) and FLEET_EVENTS (acceptances, outcomes, probe results)
-- are projected independently, in any order relative to each other: a run's state only moves
-- to a higher rank, so the rows end the same whatever order the two streams are applied in.

CREATE TABLE commands (
    command_id       TEXT PRIMARY KEY,
    -- The CommandKind number and its subject token ("run-audit").
    kind             INTEGER NOT NULL,
    kind_name        TEXT NOT NULL,
    -- {"cluster_id": "prod-eu"} or {"selector": {"env": "prod"}}.
    target           JSONB NOT NULL,
    -- The encoded CommandParams (protobuf).
    params           BYTEA NOT NULL,
    requested_by     TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    schedule_id      TEXT NOT NULL,
    scheduled_for    TIMESTAMPTZ,
    requested_at     TIMESTAMPTZ NOT NULL,
    deadline         TIMESTAMPTZ,
    -- Set when cnc refused the request as a whole.
    rejected_reason  TEXT NOT NULL DEFAULT '',
    rejected_detail  TEXT NOT NULL DEFAULT '',
    control_seq      BIGINT NOT NULL
);
CREATE INDEX commands_newest ON commands (control_seq DESC);
CREATE INDEX commands_schedule ON commands (schedule_id, control_seq DESC) WHERE schedule_id <> '';

-- One row per (command, cluster). rank: dispatched 10, accepted 20, failed because the
-- deadline passed before it started 30, timed out 35, succeeded / failed / rejected 40.
CREATE TABLE command_runs (
    command_id     TEXT NOT NULL,
    cluster_id     TEXT NOT NULL,
    state          TEXT NOT NULL,
    rank           SMALLINT NOT NULL,
    dispatched_at  TIMESTAMPTZ,
    accepted_at    TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    reason         TEXT NOT NULL DEFAULT '',
    error          TEXT NOT NULL DEFAULT '',
    summary        TEXT NOT NULL DEFAULT '',
    duration_ms    INTEGER NOT NULL DEFAULT 0,
    result         JSONB,
    -- LivenessChecked: every probe's result.
    probes         JSONB,
    commands_seq   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (command_id, cluster_id)
);
CREATE INDEX command_runs_cluster ON command_runs (cluster_id);

CREATE TABLE schedules (
    schedule_id       TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    cron              TEXT NOT NULL,
    time_zone         TEXT NOT NULL,
    kind              INTEGER NOT NULL,
    target            JSONB NOT NULL,
    params            BYTEA NOT NULL,
    deadline_seconds  INTEGER NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    created_seq       BIGINT NOT NULL,
    deleted_at        TIMESTAMPTZ,
    deleted_by        TEXT NOT NULL DEFAULT ''
);
