//! Python bindings of rnnrs: extract and validate, release the GIL, call the core, convert.
//! All logic lives in the `rnnrs` crate.

mod cell;
mod convert;
mod init;
mod io;
mod model;
mod optimizer;
mod recurrent;
mod sample;
mod seqmodel;

use pyo3::prelude::*;

/// The compiled part of rnnrs. Use the `rnnrs` package, which wraps it.
#[pymodule(gil_used = false)]
mod _rnnrs {
    #[pymodule_export]
    use crate::cell::RecurrentCell;
    #[pymodule_export]
    use crate::convert::{get_num_threads, set_num_threads, NonFiniteError};
    #[pymodule_export]
    use crate::io::{safetensors_dumps, safetensors_loads};
    #[pymodule_export]
    use crate::model::LanguageModel;
    #[pymodule_export]
    use crate::recurrent::Recurrent;
    #[pymodule_export]
    use crate::sample::{beam_search, sample, ContinuousSampler, Sampler};
    #[pymodule_export]
    use crate::seqmodel::SeqModel;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // Keep freed buffers for the next call (see `rnnrs::allocator`).
        rnnrs::allocator::tune_glibc_malloc();
        m.add("MAX_SEQUENCES", rnnrs::sample::MAX_SEQUENCES)?;
        m.add("MAX_TOKENS", rnnrs::sample::MAX_TOKENS)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
    use pyo3::prelude::*;
}
