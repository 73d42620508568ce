//! The panic hook of [`super::start`]: a main-thread panic printed as the
//! standard hook prints it, naming the thread `main` (without the standard
//! start-up it has no name), with the standard short backtrace.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the note on `RUST_BACKTRACE` is still to be printed (the
/// standard hook prints it once).
static BACKTRACE_NOTE: AtomicBool = AtomicBool::new(true);

/// Installs a panic hook that prints a panic of the main thread as the
/// standard hook does, naming the thread `main` (without the standard
/// start-up the main thread has no name), and hands any other thread's
/// panic to the standard hook.
pub(super) fn name_main_thread_in_panics() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The main thread is the one whose id is the process's: asked of
        // the kernel, since `thread::current()` panics in a thread-local
        // destructor at exit.
        // SAFETY: gettid and getpid have no precondition.
        if unsafe { libc::gettid() != libc::getpid() } {
            return standard(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("Box<dyn Any>");
        // SAFETY: gettid has no precondition.
        let tid = unsafe { libc::gettid() };
        let mut text = match info.location() {
            Some(at) => format!("thread 'main' ({tid}) panicked at {at}:\n{message}\n"),
            None => format!("thread 'main' ({tid}) panicked:\n{message}\n"),
        };
        let asked = std::env::var_os("RUST_BACKTRACE").filter(|v| v != "0");
        if let Some(style) = asked {
            text.push_str("stack backtrace:\n");
            if style == "full" {
                text.push_str(&format!("{:#}", std::backtrace::Backtrace::force_capture()));
            } else {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                text.push_str(&short_backtrace(&trace));
                text.push_str(
                    "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a \
                     verbose backtrace.\n",
                );
            }
        } else if BACKTRACE_NOTE.swap(false, Ordering::Relaxed) {
            text.push_str(
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
            );
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
    }));
}

/// The short form of a backtrace, as the standard hook prints it: from the
/// panic's entry into the standard library (the frame after
/// `__rust_end_short_backtrace`, or `rust_begin_unwind`) down to
/// the runner's start, the frames numbered again from 0. A trace in which
/// neither is found is given whole.
fn short_backtrace(trace: &str) -> String {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in trace.lines() {
        let head = line.trim_start();
        let starts = head
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match frames.last_mut() {
            Some(frame) if !starts => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    fn name<'a>(frame: &[&'a str]) -> &'a str {
        frame.first().copied().unwrap_or_default()
    }
    // After the standard library's marker, as its own hook starts (every
    // panic passes it, `panic_any`'s too, which never reaches
    // `rust_begin_unwind`); else at `rust_begin_unwind`; else everything.
    let first = frames
        .iter()
        .position(|f| name(f).contains("__rust_end_short_backtrace"))
        .map(|n| n + 1)
        .or_else(|| {
            frames
                .iter()
                .position(|f| name(f).contains("rust_begin_unwind"))
        })
        .unwrap_or(0);
    // Through the runner's own frame; or, where it was inlined away, up to
    // the entry's (named `start` when inlined itself) or the C `main`.
    let symbol = |f: &[&str]| {
        let head = name(f).trim_start();
        head.split_once(": ").map_or(head, |(_, s)| s).to_owned()
    };
    let rest = &frames[first..];
    let end = match rest.iter().position(|f| symbol(f) == "manage::run_code") {
        Some(n) => first + n + 1,
        None => rest
            .iter()
            .position(|f| {
                let s = symbol(f);
                s == "start" || s == "main" || s.contains("manage::entry::start")
            })
            .map_or(frames.len(), |n| first + n),
    };
    let mut out = String::new();
    for (n, frame) in frames[first..end].iter().enumerate() {
        for (i, line) in frame.iter().enumerate() {
            if i == 0 {
                let symbol = line.trim_start().split_once(": ").map_or(*line, |(_, s)| s);
                out.push_str(&format!("{n:>4}: {symbol}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::short_backtrace;

    #[test]
    fn the_short_backtrace_runs_from_the_panic_to_the_runner_numbered_from_0() {
        let full = "   0: manage::entry::name_main_thread_in_panics::{{closure}}
             at ./manage/src/entry.rs:200:25
   1: std::panicking::panic_with_hook
   2: __rustc::rust_begin_unwind
             at /rustc/library/std/src/panicking.rs:689:5
   3: core::panicking::panic_fmt
   4: <fixture::Boom as ManageCommand>::run
             at ./tests/src/fixture.rs:127:9
   5: manage::run_code
             at ./manage/src/lib.rs:101:16
   6: core::ops::function::FnOnce::call_once
   7: start
   8: main
   9: __libc_start_main
";
        assert_eq!(
            short_backtrace(full),
            "   0: __rustc::rust_begin_unwind
             at /rustc/library/std/src/panicking.rs:689:5
   1: core::panicking::panic_fmt
   2: <fixture::Boom as ManageCommand>::run
             at ./tests/src/fixture.rs:127:9
   3: manage::run_code
             at ./manage/src/lib.rs:101:16
"
        );
        let inlined = "   0: __rustc::rust_begin_unwind\n   1: x::run\n   2: start\n   3: main\n";
        assert_eq!(
            short_backtrace(inlined),
            "   0: __rustc::rust_begin_unwind\n   1: x::run\n"
        );
        // `panic_any` never reaches `rust_begin_unwind`: the trace starts
        // after the standard library's marker.
        let any = "   0: manage::entry::panic_hook::name_main_thread_in_panics::{{closure}}
   1: std::panicking::rust_panic_with_hook
   2: std::panicking::begin_panic::{{closure}}
   3: std::sys::backtrace::__rust_end_short_backtrace
   4: std::panicking::begin_panic
   5: x::run
   6: manage::run_code
   7: start
";
        assert_eq!(
            short_backtrace(any),
            "   0: std::panicking::begin_panic\n   1: x::run\n   2: manage::run_code\n"
        );
        let odd = "   0: a\n   1: b\n";
        assert_eq!(short_backtrace(odd), odd, "nothing known: given whole");
    }
}
