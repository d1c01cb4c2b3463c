//! The binary's allocator (`midm::alloc`), installed here as this test binary's global
//! allocator: threads moved into arenas of their own allocate, grow, zero and free as usual
//! (also across threads), and a release hands their freed memory back at once.
//! One test, so that no other test's allocations move the resident-memory figures.

#[global_allocator]
static GLOBAL: midm::alloc::Allocator = midm::alloc::Allocator;

/// Resident memory of this process in MiB (Linux), from /proc/self/statm.
#[cfg(target_os = "linux")]
fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1 << 20) as f64
}

#[test]
fn own_arenas_allocate_free_and_release() {
    std::thread::spawn(|| assert!(!midm::alloc::use_own_arena(), "own arena not allowed yet"))
        .join()
        .unwrap();
    midm::alloc::allow_own_arenas();
    let (send, receive) = std::sync::mpsc::channel::<Vec<u8>>();
    let worker = std::thread::spawn(move || {
        assert!(midm::alloc::use_own_arena(), "no own arena on mimalloc");
        assert!(
            !midm::alloc::use_own_arena(),
            "a second arena for the same thread"
        );
        // Small, medium, large and past one arena chunk (32 MiB): zeroed, written, grown.
        for size in [24usize, 5_000, 300_000, 3 << 20, 40 << 20] {
            let mut v = vec![0u8; size];
            assert!(v.iter().all(|&b| b == 0), "{size} bytes not zeroed");
            v.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i % 251) as u8);
            v.reserve_exact(size);
            v.extend((0..size).map(|i| (i % 251) as u8));
            assert!(v
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((i % size) % 251) as u8));
            send.send(v).unwrap(); // freed on the main thread
        }
        #[cfg(target_os = "linux")]
        {
            let before = resident_mib();
            let mut big = vec![1u8; 256 << 20];
            big[12345] = 2;
            let touched = resident_mib();
            drop(std::hint::black_box(big));
            midm::alloc::release_freed_memory();
            let after = resident_mib();
            eprintln!("resident {before:.0} -> {touched:.0} MiB touched -> {after:.0} released");
            assert!(
                touched - before > 200.0,
                "256 MiB written but {before} -> {touched}"
            );
            assert!(
                touched - after > 200.0,
                "not handed back: {touched} -> {after} MiB"
            );
        }
        midm::alloc::release_freed_memory();
    });
    let received: Vec<Vec<u8>> = receive.iter().collect();
    worker.join().unwrap();
    let lens: Vec<usize> = received.iter().map(Vec::len).collect();
    assert_eq!(lens, [48, 10_000, 600_000, 6 << 20, 80 << 20]);
    assert!(received
        .iter()
        .all(|v| v[1] == 1 && v[v.len() / 2 + 1] == 1));
    drop(received);
    midm::alloc::release_freed_memory();
}
