//! Rust types generated from Canopy's protobuf definitions in `proto/`.

pub mod event {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("canopy.event.v1");
    }
}

pub mod api {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("canopy.api.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Canopy proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("canopy_descriptor");
