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
//!
//! The thresholds govern only the main arena. Each further thread that allocates gets an arena of
//! its own (up to eight per core), made of 64 MiB heaps, and glibc unmaps
//! such a heap as soon as all of it is free, whatever the trim threshold. The buffers that the two
//! directions of a bidirectional layer allocate on rayon's threads lived in such heaps, so every
//! call faulted them in again. [`tune_glibc_malloc`] therefore keeps one arena (`M_ARENA_MAX` 1;
//! the crate allocates few, large blocks, so their lock is not contended). M-bi forward+backward
//! on two threads (Zen 5, 6 calls in a fresh process, three alternating runs): 179 000 → 61 000
//! page faults, 213–249 → 186–205 ms (minimum per run); unidirectional configurations, which
//! allocate on the calling thread, are unchanged.
//!
//! Blocks of 32 MiB and more (L's gates and their gradients: 52 MB each) still come fresh from the
//! OS on every call, one 4 KiB page fault at a time. The crate's large buffers (the time loops'
//! tapes and gradients, and new matrix products) therefore ask the kernel for transparent huge
//! pages before their first touch. L forward on two threads (Zen 5) went from about 29 000 page
//! faults per call to about 1 000, and from 195–207 to 163–179 ms (minimum of 8 calls,
//! alternating builds); L forward+backward 570–645 → 514–543 ms. Where transparent huge pages
//! are off (`/sys/kernel/mm/transparent_hugepage/enabled` set to `never`) the advice does
//! nothing.

/// Set glibc's `M_MMAP_THRESHOLD` to 32 MiB, `M_TRIM_THRESHOLD` to 256 MiB and `M_ARENA_MAX` to 1
/// (process-wide) unless the environment already sets them (`MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_`, `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`). Returns whether it changed
/// them; without glibc it does nothing and returns `false`. Call it before the first parallel
/// call: threads that have already allocated keep the arena they have.
pub fn tune_glibc_malloc() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if PRESET.iter().any(|v| std::env::var_os(v).is_some()) {
            return false;
        }
        let options = [(libc::M_MMAP_THRESHOLD, 32 << 20), (libc::M_TRIM_THRESHOLD, 256 << 20), (libc::M_ARENA_MAX, 1)];
        // SAFETY: `mallopt` only changes allocator parameters; glibc serialises it internally.
        options.iter().all(|&(option, value)| unsafe { libc::mallopt(option, value) } == 1)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Environment variables with which a user sets glibc's allocator options; when one is set,
/// [`tune_glibc_malloc`] leaves them all alone.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const PRESET: [&str; 4] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"];

/// Buffers at least this large get huge pages: glibc maps them fresh from the OS for each call
/// (the mmap threshold [`tune_glibc_malloc`] sets). Smaller ones live in the heap, which keeps
/// its pages from call to call, so they fault only once, and advising those already-touched
/// pages would only set the kernel's background collapsing (khugepaged) to work on them.
const HUGE_MIN_BYTES: usize = 32 << 20;

/// Advise the kernel to back the 2 MiB-aligned interior of `buf` with transparent huge pages, if
/// it is at least 32 MiB. Call it before the buffer is first written: pages already touched stay
/// small. Memory and values are unaffected; on other systems, or if the kernel declines, nothing
/// happens.
pub(crate) fn advise_huge_pages<T>(buf: &mut [T]) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const HUGE: usize = 2 << 20;
        let (start, bytes) = (buf.as_mut_ptr() as usize, std::mem::size_of_val(buf));
        if bytes < HUGE_MIN_BYTES {
            return;
        }
        let (first, end) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if first < end {
            // SAFETY: the range lies inside `buf`, which this call borrows mutably; MADV_HUGEPAGE
            // changes only how the kernel backs the pages, never their contents. A failure (e.g.
            // no THP support) only means the advice is not taken, so the result is ignored.
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = buf;
}

/// A zero-filled `(rows, cols)` matrix, on huge pages when it is large (see
/// [`advise_huge_pages`]): large zeroed blocks come fresh from the OS, untouched.
pub(crate) fn zeros<F: num_traits::Zero + Clone>(rows: usize, cols: usize) -> ndarray::Array2<F> {
    let mut a = ndarray::Array2::zeros((rows, cols));
    if let Some(s) = a.as_slice_mut() {
        advise_huge_pages(s);
    }
    a
}

#[cfg(test)]
mod tests {
    #[test]
    fn tunes_glibc_unless_the_environment_does() {
        let preset = super::PRESET.iter().any(|v| std::env::var_os(v).is_some());
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(super::tune_glibc_malloc(), glibc && !preset);
        // Allocation still works after the change.
        let v = vec![1u8; 40 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 40 << 20);
    }

    #[test]
    fn large_zeros_are_zero_and_writable() {
        for (rows, cols) in [(0, 7), (3, 5), (2049, 1024), (4096, 3001), (8191, 1025)] {
            let mut a = super::zeros::<f32>(rows, cols);
            assert_eq!(a.dim(), (rows, cols));
            assert!(a.iter().all(|&v| v == 0.0));
            a.fill(1.5);
            assert!(a.iter().all(|&v| v == 1.5));
        }
        // Unaligned, small and empty slices are fine too.
        let mut v = vec![3u8; (33 << 20) + 17];
        super::advise_huge_pages(&mut v[5..]);
        super::advise_huge_pages(&mut v[..10]);
        super::advise_huge_pages::<u8>(&mut []);
        assert!(v.iter().all(|&b| b == 3));
    }
}
