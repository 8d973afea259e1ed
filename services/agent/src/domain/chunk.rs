//! Cuts an inventory snapshot into messages that each stay under a byte bound.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{Envelope, InventoryObject, InventorySnapshot, envelope::Body};
use canopy_kit::subject::ClusterId;
use prost::Message as _;

use super::inventory::TRUNCATED;

/// Room kept for the envelope's own fields and protobuf framing beyond the measured size.
const SLACK: usize = 256;

/// Builds the chunks of one snapshot: objects go in as they are listed, full chunks come out.
#[derive(Debug)]
pub struct Chunker {
    cluster: ClusterId,
    snapshot_id: String,
    max_bytes: usize,
    next_index: u32,
    current: Vec<InventoryObject>,
    current_bytes: usize,
    total: u64,
    truncated: u64,
}

impl Chunker {
    pub fn new(cluster: ClusterId, snapshot_id: String, max_bytes: usize) -> Self {
        Self {
            cluster,
            snapshot_id,
            max_bytes,
            next_index: 0,
            current: Vec::new(),
            current_bytes: 0,
            total: 0,
            truncated: 0,
        }
    }

    /// Objects added so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Objects whose attributes were dropped because alone they exceeded the bound.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    fn budget(&self) -> usize {
        self.max_bytes
            .saturating_sub(SLACK + self.snapshot_id.len() + 64)
    }

    /// Adds an object; returns a full chunk when the object did not fit in the current one.
    pub fn push(&mut self, mut object: InventoryObject) -> Option<Envelope> {
        let mut len = framed_len(&object);
        if len > self.budget() {
            object.attributes.clear();
            object.labels.clear();
            object
                .attributes
                .insert(TRUNCATED.to_owned(), "true".to_owned());
            self.truncated += 1;
            len = framed_len(&object);
        }
        self.total += 1;
        let full = if self.current_bytes + len > self.budget() && !self.current.is_empty() {
            Some(self.flush(false, 0))
        } else {
            None
        };
        self.current_bytes += len;
        self.current.push(object);
        full
    }

    /// The last chunk (possibly empty), marking the snapshot complete with its total.
    pub fn finish(mut self) -> Envelope {
        let total = self.total;
        self.flush(true, total)
    }

    fn flush(&mut self, last: bool, total: u64) -> Envelope {
        let objects = std::mem::take(&mut self.current);
        self.current_bytes = 0;
        let index = self.next_index;
        self.next_index += 1;
        let mut env = envelope::new(
            &self.cluster,
            "agent",
            Body::InventorySnapshot(InventorySnapshot {
                snapshot_id: self.snapshot_id.clone(),
                chunk_index: index,
                last_chunk: last,
                total_objects: total,
                objects,
            }),
        );
        // Every chunk of a snapshot shares one correlation id: the snapshot's.
        env.correlation_id.clone_from(&self.snapshot_id);
        env
    }
}

/// Bytes an object takes inside the `objects` field (tag + length prefix + message).
fn framed_len(o: &InventoryObject) -> usize {
    let n = o.encoded_len();
    1 + prost::encoding::encoded_len_varint(n as u64) + n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(i: usize, attr_bytes: usize) -> InventoryObject {
        let mut o = InventoryObject {
            kind: "Pod".into(),
            namespace: "ns".into(),
            name: format!("pod-{i}"),
            ..Default::default()
        };
        o.attributes.insert("spec".into(), "x".repeat(attr_bytes));
        o
    }

    #[test]
    fn every_chunk_stays_under_the_bound_and_all_objects_arrive_once() {
        let max = 8 * 1024;
        let mut c = Chunker::new(ClusterId::parse("a").unwrap(), "s1".into(), max);
        let mut chunks = Vec::new();
        for i in 0..1000 {
            chunks.extend(c.push(object(i, i % 700)));
        }
        chunks.push(c.finish());
        let mut names = Vec::new();
        for (i, env) in chunks.iter().enumerate() {
            assert!(
                env.encoded_len() <= max,
                "chunk {i} is {} bytes",
                env.encoded_len()
            );
            let Some(Body::InventorySnapshot(s)) = &env.body else {
                panic!("not a snapshot")
            };
            assert_eq!(s.chunk_index as usize, i);
            assert_eq!(s.last_chunk, i == chunks.len() - 1);
            names.extend(s.objects.iter().map(|o| o.name.clone()));
        }
        let Some(Body::InventorySnapshot(last)) = &chunks[chunks.len() - 1].body else {
            panic!()
        };
        assert_eq!(last.total_objects, 1000);
        assert_eq!(names.len(), 1000);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 1000);
    }

    #[test]
    fn an_object_too_big_for_any_chunk_is_truncated_not_dropped() {
        let mut c = Chunker::new(ClusterId::parse("a").unwrap(), "s1".into(), 4096);
        assert!(c.push(object(1, 100_000)).is_none());
        assert_eq!(c.truncated(), 1);
        let env = c.finish();
        assert!(env.encoded_len() <= 4096);
        let Some(Body::InventorySnapshot(s)) = env.body else {
            panic!()
        };
        assert_eq!(s.objects[0].attributes[TRUNCATED], "true");
        assert_eq!(s.total_objects, 1);
    }

    #[test]
    fn an_empty_snapshot_is_one_final_chunk() {
        let c = Chunker::new(ClusterId::parse("a").unwrap(), "s1".into(), 4096);
        let Some(Body::InventorySnapshot(s)) = c.finish().body else {
            panic!()
        };
        assert!(s.last_chunk && s.objects.is_empty() && s.total_objects == 0);
    }
}
