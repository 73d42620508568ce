//! End-to-end tests of manage, in `tests/`: they run real binaries as real
//! processes. The helper binary `task-holder` holds tasks and locks on the
//! tests' command.
