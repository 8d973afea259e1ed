//! Who may publish and subscribe to what: one table, one row per NATS user Canopy issues.
//!
//! Every service connects with its own user. A row names the subjects it may publish, the
//! subjects it may subscribe to, the JetStream streams it may read through consumers (which
//! expands to the consumer API, acks and flow control of exactly those streams) and the streams
//! it may create or update. `{cluster}` stands for the leaf's cluster id. Each user also gets
//! its own inbox, `_INBOX_<inbox>.>` (the name it connects with; see `canopy_kit::nats`).
//! Nobody but the stream owner on the seed may create streams, and nobody may delete or purge
//! `AUDIT_TRAIL`.

use super::jwt::{Permission, Permissions};

/// Which server (and account) a user lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// The seed's Canopy account.
    Seed,
    /// A leaf's own account on the leaf's nats-server.
    Leaf,
    /// The system account (`SYS`), on the seed and on trunks: configuration reloads and account
    /// JWT updates only.
    SeedSystem,
    /// The system account on a leaf's nats-server: configuration reloads only.
    LeafSystem,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct UserSpec {
    /// The user name (also the file name of its `.creds`).
    pub name: &'static str,
    pub home: Home,
    /// The connection name, also its inbox prefix `_INBOX_<inbox>` (`*` = any inbox).
    pub inbox: &'static str,
    /// `STANDARD` for clients, `LEAFNODE` for links.
    pub connection: &'static str,
    /// The CIDRs it may connect from (empty: anywhere).
    pub sources: &'static [&'static str],
    pub publish: &'static [&'static str],
    pub subscribe: &'static [&'static str],
    /// Streams it reads through consumers (and may get single messages from).
    pub reads: &'static [&'static str],
    /// Streams it creates at start-up when missing and may update.
    pub owns: &'static [&'static str],
    /// What the service does with these rights (README table).
    pub purpose: &'static str,
}

/// Loopback only: for a user that connects to the nats-server of its own pod.
pub const LOOPBACK: &[&str] = &["127.0.0.1/32", "::1/128"];

/// The `dial` user's subjects: the `link` user's publish and subscribe lists together.
const DIAL_SUBJECTS: &[&str] = &[
    "canopy.deliver.{cluster}.>",
    "$JSC.R.>",
    "$JS.seed.API.CONSUMER.CREATE.COMMANDS.*.canopy.cmd.{cluster}.>",
    "$JS.seed.API.CONSUMER.CREATE.POLICIES.*.canopy.pol.{cluster}.>",
    "$JS.seed.API.CONSUMER.DELETE.COMMANDS.*",
    "$JS.seed.API.CONSUMER.DELETE.POLICIES.*",
    "$JS.FC.COMMANDS.>",
    "$JS.FC.POLICIES.>",
    "$JS.{cluster}.API.CONSUMER.CREATE.EVENTS",
    "$JS.{cluster}.API.CONSUMER.CREATE.EVENTS.>",
    "$JS.{cluster}.API.CONSUMER.DELETE.EVENTS.>",
    "$JS.FC.EVENTS.>",
    "canopy.down.{cluster}.>",
];

/// The seed streams and the seed gateway's bucket of approved interconnects.
const GATEWAY_STREAMS: &[&str] = &[
    "FLEET_EVENTS",
    "COMMANDS",
    "CONTROL",
    "AUDIT_TRAIL",
    "DEAD_LETTER",
    "POLICIES",
    "KV_canopy-interconnects",
];

/// Never allowed to anyone, admins included.
pub const ALWAYS_DENIED: &[&str] = &[
    "$JS.API.STREAM.DELETE.AUDIT_TRAIL",
    "$JS.API.STREAM.PURGE.AUDIT_TRAIL",
    "$JS.API.STREAM.MSG.DELETE.AUDIT_TRAIL",
];

/// The table. README "Security model" lists it; keep both in step.
pub const USERS: &[UserSpec] = &[
    UserSpec {
        name: "gateway",
        home: Home::Seed,
        inbox: "canopy-gateway-leafnode",
        connection: "STANDARD",
        sources: &[],
        publish: &[
            "canopy.ctl.link.>",
            "canopy.ctl.interconnect.requested",
            "_INBOX_canopy-bootstrap.*.>",
            "$KV.canopy-interconnects.>",
        ],
        subscribe: &["canopy.interconnect.request.*"],
        reads: GATEWAY_STREAMS,
        owns: GATEWAY_STREAMS,
        purpose: "creates the seed streams, answers interconnect requests (records them, hands \
                  approved leaves their sealed link credentials), adds and removes FLEET_EVENTS \
                  sources, reports links; keeps each cluster's approval in the bucket \
                  canopy-interconnects",
    },
    UserSpec {
        name: "gateway-sys",
        home: Home::SeedSystem,
        inbox: "canopy-gateway-sys",
        connection: "STANDARD",
        sources: &[],
        publish: &[
            "$SYS.REQ.CLAIMS.UPDATE",
            "$SYS.REQ.SERVER.*.RELOAD",
            "$SYS.REQ.SERVER.*.LEAFZ",
        ],
        subscribe: &[],
        reads: &[],
        owns: &[],
        purpose: "pushes the Canopy account JWT with revoked link users to the seed and trunks, \
                  pushes the accounts of seed-dialed clusters to the dialer, reloads it and reads \
                  which leaves it holds",
    },
    UserSpec {
        name: "ingestion",
        home: Home::Seed,
        inbox: "canopy-ingestion",
        connection: "STANDARD",
        sources: &[],
        publish: &["canopy.dlq.ingestion.>"],
        subscribe: &[],
        reads: &[
            "FLEET_EVENTS",
            "CONTROL",
            "AUDIT_TRAIL",
            "DEAD_LETTER",
            "POLICIES",
        ],
        owns: &[],
        purpose: "projects FLEET_EVENTS and CONTROL into Postgres, dead-letters what it cannot",
    },
    UserSpec {
        name: "api",
        home: Home::Seed,
        inbox: "canopy-api",
        connection: "STANDARD",
        sources: &[],
        publish: &[
            "canopy.ctl.policy.>",
            "canopy.ctl.command.requested",
            "canopy.ctl.schedule.created",
            "canopy.ctl.schedule.deleted",
            "canopy.ctl.remediation.approved",
            "canopy.ctl.remediation.rejected",
            "canopy.ctl.interconnect.approved",
            "canopy.ctl.interconnect.rejected",
            "canopy.ctl.interconnect.revoked",
            "canopy.audit.action.recorded",
        ],
        subscribe: &[],
        // Commands, schedules and health are read from Postgres, not from their streams.
        reads: &["FLEET_EVENTS", "CONTROL", "AUDIT_TRAIL", "POLICIES"],
        owns: &[],
        purpose: "publishes requested changes on CONTROL and the audit trail, streams events",
    },
    UserSpec {
        name: "cnc",
        home: Home::Seed,
        inbox: "canopy-cnc",
        connection: "STANDARD",
        sources: &[],
        publish: &["canopy.cmd.>", "canopy.pol.>", "canopy.ctl.command.>"],
        subscribe: &[],
        reads: &["FLEET_EVENTS", "CONTROL", "COMMANDS", "POLICIES"],
        owns: &[],
        purpose: "turns CONTROL requests and schedules into commands (and their dispatch, \
                  rejection, time-out) and effective policies",
    },
    UserSpec {
        name: "doctor",
        home: Home::Seed,
        inbox: "canopy-doctor",
        connection: "STANDARD",
        sources: &[],
        publish: &[
            "canopy.ctl.health.>",
            "canopy.ctl.diagnosis.>",
            "canopy.ctl.remediation.>",
            "canopy.ctl.command.requested",
        ],
        subscribe: &[],
        reads: &["FLEET_EVENTS", "CONTROL"],
        owns: &[],
        purpose: "reads health events and records diagnoses and remediations on CONTROL, \
                  requests the approved remediations as commands",
    },
    UserSpec {
        name: "agent",
        home: Home::Leaf,
        inbox: "canopy-agent",
        connection: "STANDARD",
        sources: &[],
        publish: &["canopy.evt.{cluster}.>", "$KV.canopy-agent.>"],
        subscribe: &[],
        reads: &["EVENTS", "COMMANDS", "POLICIES", "KV_canopy-agent"],
        owns: &["EVENTS", "KV_canopy-agent"],
        purpose: "publishes its own cluster's events, runs its commands (durable consumer \
                  `agent` on the leaf's COMMANDS, state in the KV bucket `canopy-agent`), reads \
                  its policy",
    },
    UserSpec {
        name: "gateway",
        home: Home::Leaf,
        inbox: "canopy-gateway-leafnode",
        connection: "STANDARD",
        sources: &[],
        publish: &["canopy.evt.{cluster}.>"],
        subscribe: &[],
        reads: &["EVENTS", "COMMANDS", "POLICIES"],
        owns: &["EVENTS", "COMMANDS", "POLICIES"],
        purpose: "creates the leaf streams (EVENTS, COMMANDS and POLICIES sourced from the seed)",
    },
    UserSpec {
        name: "gateway-sys",
        home: Home::LeafSystem,
        inbox: "canopy-gateway-sys",
        connection: "STANDARD",
        // A system user valid on every server of the operator: it may connect only from the
        // leaf's own pod (its gateway runs beside nats-server), not to the seed or a trunk.
        sources: LOOPBACK,
        publish: &["$SYS.REQ.SERVER.*.RELOAD"],
        subscribe: &[],
        reads: &[],
        owns: &[],
        purpose: "reloads the leaf's nats-server after writing its leafnode remote",
    },
    UserSpec {
        name: "link",
        home: Home::Seed,
        inbox: "*",
        connection: "LEAFNODE",
        sources: &[],
        publish: &[
            "canopy.deliver.{cluster}.>",
            "$JSC.R.>",
            "$JS.seed.API.CONSUMER.CREATE.COMMANDS.*.canopy.cmd.{cluster}.>",
            "$JS.seed.API.CONSUMER.CREATE.POLICIES.*.canopy.pol.{cluster}.>",
            "$JS.seed.API.CONSUMER.DELETE.COMMANDS.*",
            "$JS.seed.API.CONSUMER.DELETE.POLICIES.*",
            "$JS.FC.COMMANDS.>",
            "$JS.FC.POLICIES.>",
        ],
        subscribe: &[
            "$JS.{cluster}.API.CONSUMER.CREATE.EVENTS",
            "$JS.{cluster}.API.CONSUMER.CREATE.EVENTS.>",
            "$JS.{cluster}.API.CONSUMER.DELETE.EVENTS.>",
            "$JS.FC.EVENTS.>",
            "$JSC.R.>",
            "canopy.down.{cluster}.>",
        ],
        reads: &[],
        owns: &[],
        purpose: "the leaf's link to the seed: only its own EVENTS source, commands and policy",
    },
    UserSpec {
        name: "dial",
        home: Home::Leaf,
        inbox: "*",
        connection: "LEAFNODE",
        sources: &[],
        // What the link user may send and receive, in both directions: the dialer connects to
        // the leaf but is its hub, and nats-server then applies these lists on the dialer's side
        // without turning them around. The seed's own check is the link user the dialer holds
        // there.
        publish: DIAL_SUBJECTS,
        subscribe: DIAL_SUBJECTS,
        reads: &[],
        owns: &[],
        purpose: "the seed's dialer on a leaf that the seed dials (signed by the leaf's gateway for \
                  the key the seed names): the subjects of the cluster's link, nothing else",
    },
    UserSpec {
        name: "trunk",
        home: Home::Seed,
        inbox: "*",
        connection: "LEAFNODE",
        sources: &[],
        publish: &[
            "canopy.deliver.*.>",
            "$JSC.R.>",
            "$JS.seed.API.CONSUMER.CREATE.COMMANDS.*.canopy.cmd.*.>",
            "$JS.seed.API.CONSUMER.CREATE.POLICIES.*.canopy.pol.*.>",
            "$JS.seed.API.CONSUMER.DELETE.COMMANDS.*",
            "$JS.seed.API.CONSUMER.DELETE.POLICIES.*",
            "$JS.FC.COMMANDS.>",
            "$JS.FC.POLICIES.>",
            "canopy.interconnect.request.*",
        ],
        subscribe: &[
            "$JS.*.API.CONSUMER.CREATE.EVENTS",
            "$JS.*.API.CONSUMER.CREATE.EVENTS.>",
            "$JS.*.API.CONSUMER.DELETE.EVENTS.>",
            "$JS.FC.EVENTS.>",
            "$JSC.R.>",
            "canopy.down.*.>",
            "_INBOX_canopy-bootstrap.*.>",
        ],
        reads: &[],
        owns: &[],
        purpose: "a trunk's link to the seed: relays its leaves' links (each leaf's own link user \
                  on the trunk limits it to its cluster) and their interconnect requests",
    },
    UserSpec {
        name: "bootstrap",
        home: Home::Seed,
        inbox: "canopy-bootstrap.{cluster}",
        connection: "STANDARD",
        sources: &[],
        publish: &["canopy.interconnect.request.{cluster}"],
        subscribe: &[],
        reads: &[],
        owns: &[],
        purpose: "an unapproved leaf: may only send its interconnect request",
    },
];

/// The row of `name` on `home`.
pub fn spec(home: Home, name: &str) -> Option<&'static UserSpec> {
    USERS.iter().find(|u| u.home == home && u.name == name)
}

fn fill(pattern: &str, cluster: &str) -> String {
    pattern.replace("{cluster}", cluster)
}

/// The publish and subscribe lists of `spec`, for `cluster` (leaf and link users).
pub fn permissions(spec: &UserSpec, cluster: &str) -> Permissions {
    let mut publish: Vec<String> = spec.publish.iter().map(|p| fill(p, cluster)).collect();
    let mut subscribe: Vec<String> = spec.subscribe.iter().map(|p| fill(p, cluster)).collect();
    if spec.connection == "STANDARD" {
        subscribe.push(format!("_INBOX_{}.>", fill(spec.inbox, cluster)));
        if !spec.reads.is_empty() || !spec.owns.is_empty() {
            publish.push("$JS.API.INFO".to_owned());
        }
    }
    for s in spec.reads {
        publish.extend([
            format!("$JS.API.STREAM.INFO.{s}"),
            format!("$JS.API.STREAM.MSG.GET.{s}"),
            format!("$JS.API.DIRECT.GET.{s}"),
            format!("$JS.API.DIRECT.GET.{s}.>"),
            format!("$JS.API.CONSUMER.CREATE.{s}"),
            format!("$JS.API.CONSUMER.CREATE.{s}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{s}.*"),
            format!("$JS.API.CONSUMER.INFO.{s}.*"),
            format!("$JS.API.CONSUMER.DELETE.{s}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{s}.*"),
            format!("$JS.API.CONSUMER.NAMES.{s}"),
            format!("$JS.API.CONSUMER.LIST.{s}"),
            format!("$JS.ACK.{s}.>"),
            format!("$JS.FC.{s}.>"),
        ]);
    }
    for s in spec.owns {
        publish.extend([
            format!("$JS.API.STREAM.CREATE.{s}"),
            format!("$JS.API.STREAM.UPDATE.{s}"),
        ]);
    }
    Permissions {
        publish: Permission {
            allow: publish,
            deny: ALWAYS_DENIED.iter().map(|s| (*s).to_owned()).collect(),
        },
        subscribe: Permission {
            allow: subscribe,
            deny: Vec::new(),
        },
    }
}

/// An administrator (tests, `canopyctl nats` operations): everything but the always-denied.
pub fn admin() -> Permissions {
    Permissions {
        publish: Permission {
            allow: vec![">".to_owned()],
            deny: ALWAYS_DENIED.iter().map(|s| (*s).to_owned()).collect(),
        },
        subscribe: Permission {
            allow: vec![">".to_owned()],
            deny: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_users_are_scoped_to_their_cluster() {
        let agent = permissions(spec(Home::Leaf, "agent").unwrap(), "a");
        assert!(agent.publish.allow.contains(&"canopy.evt.a.>".to_owned()));
        assert!(agent.publish.allow.iter().all(|s| !s.contains("{cluster}")));
        assert!(
            !agent
                .publish
                .allow
                .iter()
                .any(|s| s == ">" || s == "canopy.evt.>")
        );
        let link = permissions(spec(Home::Seed, "link").unwrap(), "a");
        assert!(link.subscribe.allow.iter().all(|s| !s.contains(".b.")));
        assert!(
            link.publish
                .allow
                .contains(&"canopy.deliver.a.>".to_owned())
        );
    }

    #[test]
    fn the_dial_user_carries_the_link_users_subjects_both_ways() {
        let link = permissions(spec(Home::Seed, "link").unwrap(), "a");
        let dial = permissions(spec(Home::Leaf, "dial").unwrap(), "a");
        let mut both: Vec<String> = link.publish.allow.clone();
        both.extend(link.subscribe.allow.iter().cloned());
        both.sort();
        both.dedup();
        for list in [&dial.publish.allow, &dial.subscribe.allow] {
            let mut got = list.clone();
            got.sort();
            assert_eq!(got, both);
        }
    }

    #[test]
    fn nobody_may_create_streams_but_owners_and_nobody_deletes_the_trail() {
        for u in USERS {
            let p = permissions(u, "a");
            for s in &p.publish.allow {
                if s.starts_with("$JS.API.STREAM.CREATE.") {
                    assert!(!u.owns.is_empty(), "{} may create {s}", u.name);
                }
                assert!(!s.starts_with("$JS.API.STREAM.DELETE"), "{}: {s}", u.name);
                assert!(!s.starts_with("$JS.API.STREAM.PURGE"), "{}: {s}", u.name);
            }
            assert!(p.publish.deny.contains(&ALWAYS_DENIED[0].to_owned()));
        }
    }
}
