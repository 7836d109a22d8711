//! `pack --from URL`: packing straight from a DICOMweb archive (PACS or research archive).
//!
//! `query` selects series with QIDO-RS, `client` fetches each whole series with WADO-RS
//! (`multipart` reads the response as it arrives), and `pull` feeds the objects into the same
//! decode and shard path as files, then records what was fetched in `fetch-manifest.json`
//! (`manifest`). Credentials come from the environment or a file (`auth`). `push` stores objects
//! (predicted SEGs) back with STOW-RS.

pub mod auth;
pub mod cli;
pub mod client;
pub mod manifest;
pub mod multipart;
pub mod pull;
pub mod push;
pub mod query;
