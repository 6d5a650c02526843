//! What the reconcilers share across resources: the endpoints' clients and Secrets, the
//! addresses being worked on, who holds which person, and what is remembered per resource.

pub mod claims;
pub mod clients;
pub mod holders;
pub mod memory;
