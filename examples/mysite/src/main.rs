//! The example site's binary.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
use mysite as _;

manage::main!();
