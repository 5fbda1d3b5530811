//! Wire types shared by every server and client of netman. One file per API.

pub mod gojson;
pub mod policy;
pub mod sd;
pub mod security_groups;
