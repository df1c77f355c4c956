//! The verifier gives up with EAGAIN whenever a signal is pending for the thread loading a
//! program; an agent restarted under a profiler (py-spy interrupts each thread it samples)
//! exited on it. Here the loading thread gets a signal every 100 µs for the first 200 ms,
//! far more often than one pass of the verifier lasts: the load must wait the storm out
//! and succeed. Alone in its binary, because it installs a signal handler. Run as root.
// unsafe: sigaction(2) to install a no-op handler, pthread_kill(3) to signal the test's
// own thread: raw libc calls.
#![allow(unsafe_code)]

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use corridor_engine::xdp::Steering;

static DELIVERED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

const STORM: Duration = Duration::from_millis(200);

#[test]
fn a_storm_of_signals_while_loading_is_waited_out() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "loading an XDP program needs root (CAP_BPF, CAP_NET_ADMIN)");
    // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic
    // (async-signal-safe); SA_RESTART restarts the test's other syscalls transparently
    // (the verifier's EAGAIN is not a restartable error, so the storm still reaches it).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = count as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
    }
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() } as usize;
    let storm = thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < STORM {
            // SAFETY: `target` is the test's thread, alive until it has joined this one.
            unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGUSR1) };
            thread::sleep(Duration::from_micros(100));
        }
    });
    thread::sleep(Duration::from_millis(5)); // the storm has begun
    let started = Instant::now();
    let loaded = Steering::load();
    let took = started.elapsed();
    storm.join().unwrap();
    let delivered = DELIVERED.load(Ordering::Relaxed);
    assert!(delivered > 100, "the storm reached the loading thread only {delivered} times");
    if let Err(e) = loaded {
        panic!("the load did not outlast {STORM:?} of signals ({delivered} delivered): {e}");
    }
    assert!(took < Duration::from_secs(5), "the load took {took:?}");
}
