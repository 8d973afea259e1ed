-- The audit trail (AUDIT_TRAIL, api's ActionRecorded): one row per record, keyed by its stream
-- sequence. The chain itself is verified against the stream (AuditTrailService.Verify); this
-- table serves List with filters, newest first.

CREATE TABLE audit_trail (
    seq             BIGINT PRIMARY KEY,
    action_id       TEXT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    actor           TEXT NOT NULL,
    roles           TEXT[] NOT NULL,
    method          TEXT NOT NULL,
    target          TEXT NOT NULL,
    -- succeeded, denied, invalid, failed (unspecified for records that name none).
    outcome         TEXT NOT NULL,
    detail          TEXT NOT NULL,
    request_digest  TEXT NOT NULL,
    previous_hash   TEXT NOT NULL,
    hash            TEXT NOT NULL,
    chain_index     BIGINT NOT NULL
);
CREATE INDEX audit_trail_actor ON audit_trail (actor, seq DESC);
CREATE INDEX audit_trail_method ON audit_trail (method, seq DESC);
CREATE INDEX audit_trail_target ON audit_trail (target, seq DESC) WHERE target <> '';
CREATE INDEX audit_trail_outcome ON audit_trail (outcome, seq DESC);
CREATE INDEX audit_trail_time ON audit_trail (recorded_at);
