//! The plain telemetry messages of a batch, decided at once (see `betlake/core/contract.py`).
//!
//! A message is plain when it is a flat JSON object (no nested value, no escape, no control
//! character) whose fields have the JSON types the contract wants and pass every rule of
//! `contract._event`. For those it builds the bronze values `_event` would give, as Arrow
//! buffers. Anything else, valid or not, is left to `_event`, message by message: this path
//! only has to be right about what it takes (the differential property test of
//! `tests/unit/test_validation_properties.py` checks that it is).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// A JSON value of a flat object: what the rules need of it.
#[derive(Clone, Copy)]
enum Value<'a> {
    Str(&'a [u8]),    // the bytes between the quotes (no escape in them)
    Number(&'a [u8]), // the number as written
    Null,
    Bool,
}

const EVENT_ID: usize = 0;
const EVENT_TYPE: usize = 1;
const EVENT_TIME: usize = 2;
const PLAYER_ID: usize = 3;
const SITE_ID: usize = 4;
const AMOUNT: usize = 5;
const CURRENCY: usize = 6;
const BET_ID: usize = 7;
const PAYLOAD: usize = 8; // the message itself, a column after the fields
const FIELDS: [&[u8]; 8] = [
    b"event_id",
    b"event_type",
    b"event_time",
    b"player_id",
    b"site_id",
    b"amount",
    b"currency",
    b"bet_id",
];

/// A strict JSON reader of one flat object; `None` for anything it does not take.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string with no escape and no C0 or DEL control character (C1 is ruled out for the
    /// whole message by `PlainDecoder::event`).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let text = &self.bytes[self.at..];
        let end = text
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20 || c == 0x7f)?;
        self.at += end + 1;
        (text[end] == b'"').then_some(&text[..end])
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// A number by JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let leading_zero = self.peek() == Some(b'0');
        let whole = self.digits();
        if whole == 0 || (leading_zero && whole > 1) {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(&self.bytes[start..self.at])
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A scalar value (an array or an object is not taken).
    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            b'n' => self.literal(b"null").map(|_| Value::Null),
            b't' => self.literal(b"true").map(|_| Value::Bool),
            b'f' => self.literal(b"false").map(|_| Value::Bool),
            _ => None,
        }
    }

    /// The contract's fields of a flat object (others skipped; one given twice is not taken).
    fn object(mut self) -> Option<[Option<Value<'a>>; 8]> {
        let mut fields = [None; 8];
        self.skip_space();
        self.expect(b'{')?;
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                let key = self.string()?;
                self.skip_space();
                self.expect(b':')?;
                self.skip_space();
                let value = self.value()?;
                if let Some(field) = FIELDS.iter().position(|name| *name == key) {
                    if fields[field].replace(value).is_some() {
                        return None;
                    }
                }
                self.skip_space();
                match self.next()? {
                    b',' => self.skip_space(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        self.skip_space();
        (self.at == self.bytes.len()).then_some(fields)
    }
}

/// The value of all-ASCII-digit text (at most 18 digits), or `None`.
fn decimal(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Epoch microseconds of `YYYY-MM-DD[Tt ]HH:MM:SS[.f{1,6}]([Zz]|[+-]HH:MM)` (a year from 1,
/// a real date, hours, minutes, seconds and offsets in range), as `datetime.fromisoformat`
/// reads it; `None` for any other text.
fn rfc3339_us(text: &[u8]) -> Option<i64> {
    if text.len() < 20
        || text[4] != b'-'
        || text[7] != b'-'
        || !matches!(text[10], b'T' | b't' | b' ')
        || text[13] != b':'
        || text[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (
        decimal(&text[0..4])?,
        decimal(&text[5..7])?,
        decimal(&text[8..10])?,
    );
    let (hour, minute, second) = (
        decimal(&text[11..13])?,
        decimal(&text[14..16])?,
        decimal(&text[17..19])?,
    );
    let mut rest = &text[19..];
    let mut micros = 0;
    if rest[0] == b'.' {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return None;
        }
        micros = decimal(&rest[1..1 + digits])? * 10_i64.pow(6 - digits as u32);
        rest = &rest[1 + digits..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), hours @ .., b':', _, _] if hours.len() == 2 => {
            let (hours, minutes) = (decimal(hours)?, decimal(&rest[4..6])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (hours * 60 + minutes) * 60 * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    if year < 1
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((seconds - offset_seconds) * 1_000_000 + micros)
}

/// Cents of `\d{1,16}(\.\d{1,2})?`, or `None`.
fn cents(text: &[u8]) -> Option<i64> {
    let (whole, fraction) = match text.iter().position(|c| *c == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b"00"[..]),
    };
    if whole.len() > 16 || !(1..=2).contains(&fraction.len()) {
        return None;
    }
    let fraction = decimal(fraction)? * if fraction.len() == 1 { 10 } else { 1 };
    Some(decimal(whole)? * 100 + fraction)
}

fn trim_ascii_space(text: &[u8]) -> &[u8] {
    let space = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = text.iter().position(|c| !space(c)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|c| !space(c))
        .map_or(start, |last| last + 1);
    &text[start..end]
}

fn chars(text: &[u8]) -> usize {
    text.iter().filter(|byte| (*byte & 0xc0) != 0x80).count()
}

/// The bronze values of a plain message.
struct Event<'a> {
    event_id: &'a [u8],
    event_type: &'a [u8],
    time_us: i64,
    player_id: &'a [u8],
    site_id: &'a [u8],
    cents: Option<i64>,
    currency: Option<&'a [u8]>, // trimmed; upper-cased when stored
    bet_id: Option<&'a [u8]>,
}

/// An Arrow column being built: validity bitmap, then offsets and data (strings) or values.
struct Column {
    validity: Vec<u8>,
    nulls: usize,
    len: usize,
    offsets: Vec<u8>,
    data: Vec<u8>,
}

impl Column {
    /// A column for up to `rows` values of `width` bytes (of strings: on average) each.
    fn new(strings: bool, rows: usize, width: usize) -> Self {
        let mut offsets = Vec::with_capacity(if strings { (rows + 1) * 4 } else { 0 });
        if strings {
            offsets.extend_from_slice(&0_i32.to_le_bytes());
        }
        let validity = Vec::with_capacity(rows.div_ceil(8));
        let data = Vec::with_capacity(rows * width);
        Column {
            validity,
            nulls: 0,
            len: 0,
            offsets,
            data,
        }
    }

    fn valid(&mut self, valid: bool) {
        if self.len.is_multiple_of(8) {
            self.validity.push(0);
        }
        if valid {
            self.validity[self.len / 8] |= 1 << (self.len % 8);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    fn string(&mut self, value: Option<&[u8]>) {
        self.valid(value.is_some());
        self.data.extend_from_slice(value.unwrap_or_default());
        self.offsets
            .extend_from_slice(&(self.data.len() as i32).to_le_bytes());
    }

    fn upper(&mut self, value: Option<&[u8]>) {
        self.valid(value.is_some());
        self.data
            .extend(value.unwrap_or_default().iter().map(u8::to_ascii_uppercase));
        self.offsets
            .extend_from_slice(&(self.data.len() as i32).to_le_bytes());
    }

    fn int64(&mut self, value: i64) {
        self.valid(true);
        self.data.extend_from_slice(&value.to_le_bytes());
    }

    fn decimal128(&mut self, value: Option<i64>) {
        self.valid(value.is_some());
        self.data
            .extend_from_slice(&i128::from(value.unwrap_or(0)).to_le_bytes());
    }

    /// Arrow's buffers: validity (None without nulls), then offsets for strings, then data.
    fn buffers<'py>(self, py: Python<'py>) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        if self.data.len() > i32::MAX as usize && !self.offsets.is_empty() {
            return Err(PyValueError::new_err("over 2 GiB of strings in one column"));
        }
        let mut buffers = vec![(self.nulls > 0).then(|| PyBytes::new(py, &self.validity))];
        if !self.offsets.is_empty() {
            buffers.push(Some(PyBytes::new(py, &self.offsets)));
        }
        buffers.push(Some(PyBytes::new(py, &self.data)));
        Ok(buffers)
    }
}

/// The rules of `contract._event` a plain message is held to, given by `contract.py`.
#[pyclass(frozen)]
pub struct PlainDecoder {
    event_types: Vec<String>,
    money_types: Vec<String>,
    max_id_chars: usize,
    max_message_bytes: usize,
    min_time_us: i64,
    max_time_us: i64, // exclusive
}

impl PlainDecoder {
    fn id<'a>(&self, value: Option<Value<'a>>) -> Option<&'a [u8]> {
        match value? {
            Value::Str(id) if !id.is_empty() && chars(id) <= self.max_id_chars => Some(id),
            _ => None,
        }
    }

    fn time_us(&self, value: Value) -> Option<i64> {
        let time_us = match value {
            Value::Str(text) => rfc3339_us(text)?,
            Value::Number(text) => decimal(text)?.checked_mul(1000)?,
            _ => return None,
        };
        (self.min_time_us..self.max_time_us)
            .contains(&time_us)
            .then_some(time_us)
    }

    /// The message's bronze values, if it is plain and valid.
    fn event<'a>(&self, message: &'a [u8], latest_us: i64) -> Option<Event<'a>> {
        if message.len() > self.max_message_bytes
            || !message.is_ascii()
                && (std::str::from_utf8(message).is_err()
                    || message
                        .windows(2)
                        .any(|pair| pair[0] == 0xc2 && pair[1] <= 0x9f))
        {
            return None; // not UTF-8, or a C1 control character (U+0080-U+009F: C2 80-C2 9F)
        }
        let fields = Reader {
            bytes: message,
            at: 0,
        }
        .object()?;
        let event_type = match fields[EVENT_TYPE]? {
            Value::Str(name) if self.event_types.iter().any(|t| t.as_bytes() == name) => name,
            _ => return None,
        };
        let time_us = self.time_us(fields[EVENT_TIME]?)?;
        if time_us > latest_us {
            return None;
        }
        let cents = if self.money_types.iter().any(|t| t.as_bytes() == event_type) {
            match fields[AMOUNT]? {
                Value::Str(text) | Value::Number(text) => Some(cents(text)?),
                _ => return None,
            }
        } else {
            None
        };
        let currency = match fields[CURRENCY] {
            None | Some(Value::Null) => None,
            Some(Value::Str(text)) if text.is_ascii() => {
                Some(trim_ascii_space(text)).filter(|code| !code.is_empty())
            }
            _ => return None,
        };
        let bet_id = match fields[BET_ID] {
            None | Some(Value::Null) => None,
            Some(Value::Str(b"")) => None,
            Some(value) => Some(self.id(Some(value))?),
        };
        Some(Event {
            event_id: self.id(fields[EVENT_ID])?,
            event_type,
            time_us,
            player_id: self.id(fields[PLAYER_ID])?,
            site_id: self.id(fields[SITE_ID])?,
            cents,
            currency,
            bet_id,
        })
    }
}

#[pymethods]
impl PlainDecoder {
    #[new]
    fn new(
        event_types: Vec<String>,
        money_types: Vec<String>,
        max_id_chars: usize,
        max_message_bytes: usize,
        min_time_us: i64,
        max_time_us: i64,
    ) -> Self {
        PlainDecoder {
            event_types,
            money_types,
            max_id_chars,
            max_message_bytes,
            min_time_us,
            max_time_us,
        }
    }

    /// The plain messages of `payloads` (bytes each): their indexes (int64 bytes) and, per
    /// bronze column, its Arrow buffers. Runs without the GIL.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        payloads: &Bound<'py, PyList>,
        latest_us: i64,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        let held = payloads
            .iter()
            .map(|payload| payload.downcast_into::<PyBytes>())
            .collect::<Result<Vec<_>, _>>()?;
        let messages: Vec<&[u8]> = held.iter().map(|payload| payload.as_bytes()).collect();
        let (index, columns) = py.allow_threads(|| {
            let rows = messages.len();
            let bytes: usize = messages.iter().map(|message| message.len()).sum();
            let mut index = Vec::with_capacity(rows * 8);
            // In FIELDS' order, then the payload: (strings or not, bytes a value, a guess
            // for strings: capacity only)
            let mut columns: Vec<Column> = [
                (true, 24),
                (true, 12),
                (false, 8),
                (true, 12),
                (true, 16),
                (false, 16),
                (true, 4),
                (true, 24),
                (true, bytes.div_ceil(rows.max(1))),
            ]
            .map(|(strings, width)| Column::new(strings, rows, width))
            .into();
            for (position, message) in messages.iter().enumerate() {
                let Some(event) = self.event(message, latest_us) else {
                    continue;
                };
                index.extend_from_slice(&(position as i64).to_le_bytes());
                columns[EVENT_ID].string(Some(event.event_id));
                columns[EVENT_TYPE].string(Some(event.event_type));
                columns[EVENT_TIME].int64(event.time_us);
                columns[PLAYER_ID].string(Some(event.player_id));
                columns[SITE_ID].string(Some(event.site_id));
                columns[AMOUNT].decimal128(event.cents);
                columns[CURRENCY].upper(event.currency);
                columns[BET_ID].string(event.bet_id);
                columns[PAYLOAD].string(Some(message));
            }
            (index, columns)
        });
        let out = PyDict::new(py);
        let names = FIELDS.iter().copied().chain([&b"payload"[..]]);
        for (name, column) in names.zip(columns) {
            out.set_item(std::str::from_utf8(name)?, column.buffers(py)?)?;
        }
        Ok((PyBytes::new(py, &index), out))
    }
}
