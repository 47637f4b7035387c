//! betlake's native fast path: the two per-event loops of the stream's reads.

mod decoder;
mod ledger;

use pyo3::prelude::*;

#[pymodule]
fn betlake_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<decoder::PlainDecoder>()?;
    module.add_class::<ledger::LedgerWindow>()?;
    module.add_function(wrap_pyfunction!(ledger::decide, module)?)
}
