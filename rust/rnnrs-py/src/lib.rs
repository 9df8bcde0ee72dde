//! Python bindings of rnnrs: extract and validate, release the GIL, call the core, convert.
//! All logic lives in the `rnnrs` crate.

mod convert;
mod io;
mod model;
mod optimizer;
mod recurrent;
mod sample;
mod seqmodel;

use pyo3::prelude::*;

/// mimalloc keeps freed memory for reuse: every forward/backward call allocates tens of MB of
/// buffers, which glibc's allocator unmaps on free and the kernel zeroes and faults in again on the
/// next call (measured: M forward+backward on 2 threads 100–109 ms with glibc, 76–80 with mimalloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in `mimalloc.h`, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory for 1 s (mimalloc's default is 10 ms) before returning it to the OS: a
/// forward+backward call allocates and frees ~100 MB, and with the default a part of it is
/// returned and faulted in again on the next call (measured: M forward+backward, 2 threads,
/// 163 → 150–153 ms of CPU time). Memory idle for a second is still returned.
fn tune_allocator() {
    // SAFETY: plain option getters/setters of the allocator, callable at any time. The option is
    // changed only if it holds mimalloc's documented default for `purge_delay` (10), which guards
    // against a differently numbered option in another mimalloc version.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 10 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
        }
    }
}

/// The compiled part of rnnrs. Use the `rnnrs` package, which wraps it.
#[pymodule(gil_used = false)]
mod _rnnrs {
    #[pymodule_export]
    use crate::convert::NonFiniteError;
    #[pymodule_export]
    use crate::io::{safetensors_dumps, safetensors_loads};
    #[pymodule_export]
    use crate::model::LanguageModel;
    #[pymodule_export]
    use crate::recurrent::Recurrent;
    #[pymodule_export]
    use crate::sample::{beam_search, sample, Sampler};
    #[pymodule_export]
    use crate::seqmodel::SeqModel;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::tune_allocator();
        m.add("MAX_SEQUENCES", rnnrs::sample::MAX_SEQUENCES)?;
        m.add("MAX_TOKENS", rnnrs::sample::MAX_TOKENS)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
    use pyo3::prelude::*;
}
