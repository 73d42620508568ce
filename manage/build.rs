//! Release binaries lay out their start-up code first: see
//! `startup_layout.rs`.
const STARTUP_LD: &str = "startup.ld";
include!("startup_layout.rs");
