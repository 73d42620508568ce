//! Release binaries — the empty baseline too, so that every figure
//! compares binaries linked alike — lay out their start-up code first:
//! see `manage/startup_layout.rs`.
const STARTUP_LD: &str = "../../manage/startup.ld";
include!("../../manage/startup_layout.rs");
