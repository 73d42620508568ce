//! The example site's binary, built from its library with `manage::main!()`
//! exactly as
//! `examples/mysite` builds it. Tests start it with `argv[0]` set to
//! `mysite`.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]

use mysite as _;

manage::main!();
