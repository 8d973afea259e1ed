-- A remediation follows its command to the end. The command's outcome is projected once, into
-- command_runs and commands (0004), from CONTROL and FLEET_EVENTS in any order; this view reads
-- it from there instead of keeping a second copy that could disagree, so that a rebuild, which
-- replays those tables, gives the same rows.
--
-- state: proposed, approved, rejected (by an operator or withdrawn by the doctor), requested
-- (asked of cnc, not yet accepted by the agent), running (accepted), succeeded, failed (by the
-- agent, or refused by cnc), timed-out (not finished by its deadline).
CREATE VIEW remediation_status AS
SELECT
    r.id, r.cluster_id, r.diagnosis_id, r.playbook, r.kind, r.target, r.reason, r.auto,
    CASE
        WHEN r.state <> 'requested' THEN r.state
        WHEN c.rejected_reason <> '' THEN 'failed'
        WHEN cr.state IS NULL OR cr.state = 'dispatched' THEN 'requested'
        WHEN cr.state = 'accepted' THEN 'running'
        WHEN cr.state = 'succeeded' THEN 'succeeded'
        WHEN cr.state = 'timed_out' THEN 'timed-out'
        -- The agent refused to start it after its deadline.
        WHEN cr.state = 'failed' AND cr.reason = 'deadline_passed' THEN 'timed-out'
        ELSE 'failed'
    END AS state,
    r.proposed_at, r.decided_by, r.decided_at, r.decision_reason, r.command_id, r.requested_at,
    -- What the command did or why it did not, for people.
    CASE
        WHEN r.state <> 'requested' THEN ''
        WHEN c.rejected_reason <> '' THEN
            concat_ws(': ', 'refused by cnc', c.rejected_reason, NULLIF(c.rejected_detail, ''))
        WHEN cr.state = 'succeeded' THEN cr.summary
        WHEN cr.state IN ('failed', 'rejected', 'timed_out') THEN
            concat_ws(': ', NULLIF(cr.reason, ''), NULLIF(cr.error, ''))
        ELSE ''
    END AS result,
    CASE WHEN r.state = 'requested' THEN cr.finished_at END AS finished_at,
    r.seq
FROM remediations r
LEFT JOIN commands c ON c.command_id = r.command_id
LEFT JOIN command_runs cr ON cr.command_id = r.command_id AND cr.cluster_id = r.cluster_id;
