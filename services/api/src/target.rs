//! What a call is about, read from its encoded request for the audit trail, for every method
//! of every service (from the descriptor set, so new services need nothing here).
//!
//! The target is the first non-empty string field named like an identifier, in the order of
//! [`TARGET_FIELDS`] (a cluster id wins over a name), at the top of the request or one or two
//! messages down (a command's `target.cluster_id`, a derogation's `scope.cluster_id`); a label
//! selector reads `selector:k=v,...`.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;

/// Field names that name a call's target, most specific first.
pub const TARGET_FIELDS: &[&str] = &[
    "cluster_id",
    SELECTOR,
    "command_id",
    "schedule_id",
    "remediation_id",
    "derogation_id",
    "request_id",
    "name",
];

#[derive(Debug, Clone)]
enum Kind {
    Str,
    /// A message field, by type name (`.pkg.Type`).
    Msg(String),
    /// A `map<string, string>`.
    StrMap,
    Other,
}

#[derive(Debug, Clone)]
struct Field {
    number: u32,
    name: String,
    kind: Kind,
}

#[derive(Debug, Default)]
struct Index {
    /// Message type name → fields.
    types: HashMap<String, Vec<Field>>,
    /// `/pkg.Service/Method` → (input type, client streaming).
    methods: HashMap<String, (String, bool)>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut idx = Index::default();
        let Ok(set) =
            prost_types::FileDescriptorSet::decode(canopy_kit::proto::FILE_DESCRIPTOR_SET)
        else {
            return idx;
        };
        // Map entry types, to recognise map<string, string>.
        let mut string_maps = std::collections::HashSet::new();
        fn walk(
            prefix: &str,
            msgs: &[prost_types::DescriptorProto],
            out: &mut Vec<(String, prost_types::DescriptorProto)>,
        ) {
            for m in msgs {
                let name = format!("{prefix}.{}", m.name());
                walk(&name, &m.nested_type, out);
                out.push((name, m.clone()));
            }
        }
        let mut all = Vec::new();
        for file in &set.file {
            walk(
                &format!(".{}", file.package()),
                &file.message_type,
                &mut all,
            );
            for service in &file.service {
                for m in &service.method {
                    idx.methods.insert(
                        format!("/{}.{}/{}", file.package(), service.name(), m.name()),
                        (m.input_type().to_owned(), m.client_streaming()),
                    );
                }
            }
        }
        for (name, m) in &all {
            let is_entry = m.options.as_ref().is_some_and(|o| o.map_entry());
            if is_entry && m.field.iter().all(|f| f.r#type() == Type::String) {
                string_maps.insert(name.clone());
            }
        }
        for (name, m) in all {
            let fields = m
                .field
                .iter()
                .map(|f| Field {
                    number: u32::try_from(f.number()).unwrap_or(0),
                    name: f.name().to_owned(),
                    kind: match f.r#type() {
                        Type::String => Kind::Str,
                        Type::Message if string_maps.contains(f.type_name()) => Kind::StrMap,
                        Type::Message => Kind::Msg(f.type_name().to_owned()),
                        _ => Kind::Other,
                    },
                })
                .collect();
            idx.types.insert(name, fields);
        }
        idx
    })
}

/// Whether `method` is a known method whose request is a single message (so that the layer may
/// read the whole request before the handler runs).
pub fn single_request(method: &str) -> bool {
    index()
        .methods
        .get(method)
        .is_some_and(|(_, streaming)| !streaming)
}

/// The length-delimited top-level fields of an encoded message (number, bytes); `None` when
/// it does not parse.
fn fields(mut buf: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                out.push((number, buf.get(..len)?));
                buf = buf.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The first non-empty value of the string field `wanted` in the message, at the top or
/// nested up to two messages down (`selector`: a label map, as `selector:k=v,...`).
fn find(idx: &Index, type_name: &str, msg: &[u8], depth: u8, wanted: &str) -> Option<String> {
    let schema = idx.types.get(type_name)?;
    let present = fields(msg)?;
    let value = |f: &Field| {
        present
            .iter()
            .rev()
            .find(|(n, _)| *n == f.number)
            .map(|(_, v)| *v)
    };
    for f in schema {
        match &f.kind {
            Kind::Str if f.name == wanted => {
                if let Some(v) = value(f).and_then(|v| std::str::from_utf8(v).ok())
                    && !v.is_empty()
                {
                    return Some(v.to_owned());
                }
            }
            Kind::StrMap if wanted == SELECTOR => {
                let pairs: Vec<String> = present
                    .iter()
                    .filter(|(n, _)| *n == f.number)
                    .filter_map(|(_, entry)| {
                        let kv = fields(entry)?;
                        let get = |n| {
                            kv.iter()
                                .find(|(k, _)| *k == n)
                                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                                .unwrap_or("")
                        };
                        Some(format!("{}={}", get(1), get(2)))
                    })
                    .collect();
                if !pairs.is_empty() {
                    return Some(format!("selector:{}", pairs.join(",")));
                }
            }
            _ => {}
        }
    }
    if depth >= 2 {
        return None;
    }
    schema.iter().find_map(|f| match &f.kind {
        Kind::Msg(t) => value(f).and_then(|v| find(idx, t, v, depth + 1, wanted)),
        _ => None,
    })
}

/// In [`TARGET_FIELDS`]: a label selector (any `map<string, string>` field).
const SELECTOR: &str = "selector";

/// The target of a call to `method` with the encoded request `message` ("" when none).
pub fn of(method: &str, message: &[u8]) -> String {
    let idx = index();
    let Some((input, _)) = idx.methods.get(method) else {
        return String::new();
    };
    let mut target = TARGET_FIELDS
        .iter()
        .find_map(|wanted| find(idx, input, message, 0, wanted))
        .unwrap_or_default();
    // Bounded: the trail stores it.
    if target.len() > 256 {
        let mut end = 256;
        while !target.is_char_boundary(end) {
            end -= 1;
        }
        target.truncate(end);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::api::v1::{
        DeleteScheduleRequest, GrantDerogationRequest, RunCommandRequest, SetPolicyRequest,
    };
    use canopy_kit::proto::event::v1::{
        CommandTarget, DerogationScope, LabelSelector, command_target::Target,
    };

    #[test]
    fn targets_are_read_from_requests() {
        let run = RunCommandRequest {
            target: Some(CommandTarget {
                target: Some(Target::ClusterId("prod-eu".into())),
            }),
            idempotency_key: "k".into(),
            ..Default::default()
        };
        assert_eq!(
            of(
                "/canopy.api.v1.CommandService/RunAudit",
                &run.encode_to_vec()
            ),
            "prod-eu"
        );
        let sel = RunCommandRequest {
            target: Some(CommandTarget {
                target: Some(Target::Selector(LabelSelector {
                    match_labels: [("env".to_owned(), "prod".to_owned())].into(),
                })),
            }),
            ..Default::default()
        };
        assert_eq!(
            of(
                "/canopy.api.v1.CommandService/RunAudit",
                &sel.encode_to_vec()
            ),
            "selector:env=prod"
        );
        let del = DeleteScheduleRequest {
            schedule_id: "s1".into(),
        };
        assert_eq!(
            of(
                "/canopy.api.v1.ScheduleService/DeleteSchedule",
                &del.encode_to_vec()
            ),
            "s1"
        );
        let grant = GrantDerogationRequest {
            check: "PRIVILEGED".into(),
            scope: Some(DerogationScope {
                cluster_id: "dev-ap".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            of(
                "/canopy.api.v1.PolicyService/GrantDerogation",
                &grant.encode_to_vec()
            ),
            "dev-ap"
        );
        assert_eq!(
            of(
                "/canopy.api.v1.PolicyService/SetPolicy",
                &SetPolicyRequest::default().encode_to_vec()
            ),
            ""
        );
        let schedule = canopy_kit::proto::api::v1::CreateScheduleRequest {
            name: "nightly".into(),
            target: run.target.clone(),
            ..Default::default()
        };
        assert_eq!(
            of(
                "/canopy.api.v1.ScheduleService/CreateSchedule",
                &schedule.encode_to_vec()
            ),
            "prod-eu",
            "a cluster id wins over a name"
        );
        assert_eq!(of("/nope/Nope", b"\x0a\x01x"), "");
        assert_eq!(
            of("/canopy.api.v1.CommandService/RunAudit", b"\xff\xff"),
            ""
        );
        assert!(single_request("/canopy.api.v1.PolicyService/SetPolicy"));
        assert!(!single_request("/nope/Nope"));
    }
}
