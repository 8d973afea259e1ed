//! End-to-end tests over the built binaries (`cargo build --workspace --bins` first; `make test`
//! does it).

mod mesh;
