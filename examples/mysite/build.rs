//! Release binaries lay out the runner's start-up code first: see
//! `manage/startup_layout.rs`.
const STARTUP_LD: &str = "../../manage/startup.ld";
include!("../../manage/startup_layout.rs");
