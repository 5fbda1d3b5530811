//! Moving a policy store between databases: `policy-server export` writes one JSON document of
//! everything the store holds, `policy-server import` loads it into an empty database of any
//! backend. See docs/store.md, "Moving to PostgreSQL".

pub mod command;
pub mod document;
mod import;
mod sd_section;

pub use command::{check, export, import};
pub use document::Document;
pub use import::Imported;
