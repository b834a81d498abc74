//! Hands back to the system the memory that glibc's allocator keeps after otpd freed it.
//! glibc returns freed memory only from the top of a heap, so what a burst of requests
//! (or the phone-number library's load at start-up) freed between live blocks stays
//! resident though nothing uses it (BENCHMARKS.md, History: "Freed memory handed
//! back"). Elsewhere (musl,
//! other systems) the allocator returns memory itself, and this does nothing.

/// Asks glibc to return the free pages of every arena (`malloc_trim(0)`); true if it gave
/// any back. It locks each arena in turn while it walks it, so it is called once a
/// minute, not per request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() -> bool {
    // SAFETY: malloc_trim takes no pointers and no state of ours; it only unmaps the
    // pages of glibc's own free chunks, under the same locks as malloc and free.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// No such call here: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// This process's resident anonymous memory, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn freed_small_blocks_between_live_ones_go_back_to_the_system() {
        // 64 MiB in 512-byte blocks (small enough that glibc carves them from its heap,
        // not from a mapping of their own), written so that their pages are resident.
        let mut blocks: Vec<Vec<u8>> = (0..131_072).map(|i| vec![i as u8; 512]).collect();
        let kept = blocks.pop();
        // Free all but the last: the heap's top stays in use, so glibc's own trimming on
        // free cannot give back what lies below it.
        drop(blocks);
        let before = rss_anon_kib();
        assert!(release(), "malloc_trim gave nothing back");
        let after = rss_anon_kib();
        drop(kept);
        // Other tests allocate meanwhile; most of the 64 MiB must still have gone.
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "RssAnon {before} KiB -> {after} KiB"
        );
    }
}
