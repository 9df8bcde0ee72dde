//! Keeping freed buffers for the next call, under glibc's allocator.
//!
//! Every forward/backward call allocates its buffers (a few MB to tens of MB). glibc returns the
//! memory at the top of its heap to the OS once more than its trim threshold is free (by default
//! twice the largest block it has seen freed), so a loop of calls faults the same pages in again on
//! every call, with the kernel zeroing each one: a fifth of the time of a small training step
//! (S forward+backward on two threads, 2-core Xeon: 6.0 → 4.2 ms with [`tune_glibc_malloc`]).
//!
//! [`tune_glibc_malloc`] fixes glibc's thresholds: blocks below 32 MiB (the most glibc allows)
//! come from the heap, and up to 256 MiB of free memory at the top of a heap is kept for the next
//! call. glibc's own adaptive scheme tops out at 64 MiB, less than one training step of a
//! mid-sized model frees (the tape and gradients of M-gru: ~90 MB), so every step faulted most of
//! its memory in again: with 256 MiB, M-gru forward+backward on two threads went 93–99 → 84–91 ms
//! and L 584–606 → 555–585 ms (three alternating runs each, 2-core Xeon). The cost is that a
//! process keeps up to that much freed memory mapped after a large call; it never raises the
//! peak. The Python extension calls it when it is imported.

/// Set glibc's `M_MMAP_THRESHOLD` to 32 MiB and `M_TRIM_THRESHOLD` to 256 MiB (process-wide)
/// unless the environment already sets them (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`
/// or `GLIBC_TUNABLES`). Returns whether it changed them; without glibc it does nothing and
/// returns `false`.
pub fn tune_glibc_malloc() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let preset = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"];
        if preset.iter().any(|v| std::env::var_os(v).is_some()) {
            return false;
        }
        // SAFETY: `mallopt` only changes allocator parameters; glibc serialises it internally.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tunes_glibc_unless_the_environment_does() {
        let preset = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"].iter().any(|v| std::env::var_os(v).is_some());
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(super::tune_glibc_malloc(), glibc && !preset);
        // Allocation still works after the change.
        let v = vec![1u8; 40 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 40 << 20);
    }
}
