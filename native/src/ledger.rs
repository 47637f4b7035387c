//! The event ledger's per-event work (see `streaming/ledger.py`): each window's events, known by
//! a keyed hash of their ids, with the lateness bronze stores for them and whether this run has
//! counted them.
//!
//! An id's hash has 127 bits, keyed at random once per process (two SipHash-1-3 keys): two ids
//! of one window sharing a hash (the second would look stored already) has odds of about
//! n² / 2¹²⁸ for n events, and hostile ids cannot aim at it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::OnceLock;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// An event id's keyed hash. Its lowest bit is 0: a closed window keeps the event's lateness
/// there (`LedgerWindow::sorted`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Id(u64, u64);

impl Id {
    fn of(event_id: &[u8]) -> Id {
        static KEYS: OnceLock<[RandomState; 2]> = OnceLock::new();
        let [high, low] = KEYS.get_or_init(|| [RandomState::new(), RandomState::new()]);
        Id(high.hash_one(event_id), low.hash_one(event_id) & !1)
    }

    fn with_late(self, late: bool) -> Id {
        Id(self.0, self.1 | late as u64)
    }

    fn without_late(self) -> Id {
        Id(self.0, self.1 & !1)
    }

    fn late(self) -> bool {
        self.1 & 1 == 1
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0); // a keyed hash already: a hash map need not hash it again
    }
}

/// The hasher of a map of `Id`s: it passes the first half through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only an Id's u64 is hashed")
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const LATE: u8 = 1;
const COUNTED: u8 = 2;

/// One window's events. Open, it maps every event bronze has to its flags (`LATE`, and
/// `COUNTED` once this run's figures take it). Closed, nothing counts into it any more: bronze's
/// events are sorted, 16 bytes each with their lateness, and the map holds those stored since.
#[pyclass(module = "betlake_native")]
pub struct LedgerWindow {
    open: bool,
    events: HashMap<Id, u8, BuildHasherDefault<PassThrough>>,
    sorted: Vec<Id>,
}

impl LedgerWindow {
    /// The event's lateness, and whether this read stores it (bronze lacks it) and counts it
    /// (on time by both its stored flag and `late_now`, in an open window, not counted yet).
    fn decide(&mut self, id: Id, late_now: bool) -> (bool, bool, bool) {
        if !self.open {
            let at = self
                .sorted
                .partition_point(|&other| other.without_late() < id);
            if let Some(&stored) = self
                .sorted
                .get(at)
                .filter(|other| other.without_late() == id)
            {
                return (stored.late(), false, false);
            }
        }
        let (flags, store) = match self.events.entry(id) {
            Entry::Occupied(entry) => (entry.into_mut(), false),
            Entry::Vacant(entry) => (entry.insert(if late_now { LATE } else { 0 }), true),
        };
        let late = *flags & LATE != 0;
        let count = self.open && !late && !late_now && *flags & COUNTED == 0;
        if count {
            *flags |= COUNTED;
        }
        (late, store, count)
    }
}

/// The strings of an Arrow string array, given as its value offsets and bytes.
fn strings<'a>(offsets: &[i32], data: &'a [u8]) -> PyResult<Vec<&'a [u8]>> {
    offsets
        .windows(2)
        .map(|pair| {
            data.get(pair[0] as usize..pair[1] as usize)
                .ok_or_else(|| PyValueError::new_err("string offsets out of their data"))
        })
        .collect()
}

#[pymethods]
impl LedgerWindow {
    /// An open window holding bronze's events of it (ids as an Arrow string array's offsets
    /// and bytes, each with its `arrived_late` as a byte; an id given twice keeps its first
    /// flag).
    #[new]
    fn new(
        py: Python<'_>,
        offsets: PyBuffer<i32>,
        data: PyBuffer<u8>,
        late: PyBuffer<u8>,
    ) -> PyResult<Self> {
        let (offsets, data, late) = (offsets.to_vec(py)?, data.to_vec(py)?, late.to_vec(py)?);
        let ids = strings(&offsets, &data)?;
        if ids.len() != late.len() {
            return Err(PyValueError::new_err("one lateness flag an event"));
        }
        let mut events = HashMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (id, late) in ids.into_iter().zip(late) {
            events
                .entry(Id::of(id))
                .or_insert(if late != 0 { LATE } else { 0 });
        }
        Ok(LedgerWindow {
            open: true,
            events,
            sorted: Vec::new(),
        })
    }

    /// Close the window: keep only what bronze holds, compactly.
    fn close(&mut self) {
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.extend(
            self.events
                .drain()
                .map(|(id, flags)| id.with_late(flags & LATE != 0)),
        );
        sorted.sort_unstable();
        sorted.shrink_to_fit();
        self.sorted = sorted;
        self.events.shrink_to_fit();
        self.open = false;
    }

    /// How many events the window holds.
    fn __len__(&self) -> usize {
        self.sorted.len() + self.events.len()
    }
}

/// One read's events, in arrival order: event `i` is the string `i` of `offsets` and `data`,
/// of window `windows[window_of[i]]`, late by the watermark when it arrived if
/// `late_by_watermark[i]` is not 0. An event its window has keeps its stored lateness; a new one takes
/// the watermark's. Returns, per event as bytes of 0 or 1: its lateness, whether bronze lacks
/// it (store it), whether this run's figures take it now (count it).
#[pyfunction]
pub fn decide<'py>(
    py: Python<'py>,
    mut windows: Vec<PyRefMut<'py, LedgerWindow>>,
    window_of: PyBuffer<i64>,
    offsets: PyBuffer<i32>,
    data: PyBuffer<u8>,
    late_by_watermark: PyBuffer<u8>,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
)> {
    let window_of = window_of.to_vec(py)?;
    let (offsets, data) = (offsets.to_vec(py)?, data.to_vec(py)?);
    let late_by_watermark = late_by_watermark.to_vec(py)?;
    let ids = strings(&offsets, &data)?;
    if ids.len() != window_of.len() || ids.len() != late_by_watermark.len() {
        return Err(PyValueError::new_err(
            "one window and one watermark flag an event",
        ));
    }
    let events = ids.len();
    let (mut late, mut store, mut count) =
        (vec![0u8; events], vec![0u8; events], vec![0u8; events]);
    for (i, (id, (&window, &late_now))) in ids
        .iter()
        .zip(window_of.iter().zip(&late_by_watermark))
        .enumerate()
    {
        let window = usize::try_from(window)
            .ok()
            .and_then(|window| windows.get_mut(window))
            .ok_or_else(|| PyValueError::new_err("an event of no window given"))?;
        let (is_late, is_new, counts) = window.decide(Id::of(id), late_now != 0);
        (late[i], store[i], count[i]) = (is_late as u8, is_new as u8, counts as u8);
    }
    Ok((
        PyBytes::new(py, &late),
        PyBytes::new(py, &store),
        PyBytes::new(py, &count),
    ))
}
