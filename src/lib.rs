//! vault: encrypted, deduplicated backups of photos and videos to local folders and any
//! S3-compatible bucket. See docs/design.md for the repository format.
#![forbid(unsafe_code)]

pub mod archiver;
pub mod backend;
pub mod blobwriter;
pub mod cache;
pub mod changes;
pub mod checker;
pub mod chunker;
pub mod civil;
pub mod compress;
pub mod copier;
pub mod crypto;
pub mod devicekey;
pub mod directio;
pub mod envsecrets;
pub mod error;
pub mod forget;
pub mod format;
pub mod ids;
pub mod interrupt;
pub mod keys;
pub mod mover;
pub mod namesort;
pub mod packer;
pub mod pipe;
pub mod progress;
pub mod pruner;
pub mod random;
pub mod readback;
pub mod recopy;
pub mod repair;
pub mod repo;
pub mod restorer;
pub mod retention;
pub mod settings;
pub mod snapshots;
pub mod stats;
pub mod testhook;
pub mod treewalk;
pub mod workers;

pub use error::{Error, Result};
pub use ids::Id;
pub use workers::worker_count;
