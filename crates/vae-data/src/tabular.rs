//! Tabular data: CSV and NPY files whose rows are examples. Features are scaled per column
//! ([`Normalize`]) and kept as f32; one column may hold labels.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vae_core::DataShape;

use crate::dataset::{Dataset, Values};
use crate::error::{DataError, Result};

/// How the columns of tabular data are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Min-max per column to [0, 1] (a constant column becomes 0).
    #[default]
    Unit,
    /// Zero mean and unit variance per column (a constant column becomes 0).
    Standard,
    /// Values as they are.
    None,
}

impl Normalize {
    /// Scales each of the `cols` columns of the row-major `values` in place.
    pub fn apply(self, values: &mut [f64], cols: usize) {
        if cols == 0 || self == Self::None {
            return;
        }
        let rows = values.len() / cols;
        for c in 0..cols {
            let col = || values.iter().skip(c).step_by(cols);
            let (shift, scale) = match self {
                Self::Unit => {
                    let lo = col().copied().fold(f64::INFINITY, f64::min);
                    let hi = col().copied().fold(f64::NEG_INFINITY, f64::max);
                    (lo, if hi > lo { 1.0 / (hi - lo) } else { 0.0 })
                }
                Self::Standard => {
                    let mean = col().sum::<f64>() / rows as f64;
                    let var = col().map(|v| (v - mean) * (v - mean)).sum::<f64>() / rows as f64;
                    (mean, if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 })
                }
                Self::None => (0.0, 1.0),
            };
            for v in values.iter_mut().skip(c).step_by(cols) {
                *v = (*v - shift) * scale;
            }
        }
    }
}

/// Which column of a table holds the labels: a header name, or a 0-based index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    Name(String),
    Index(usize),
}

impl LabelColumn {
    /// Parses `--label-column`: a number is an index unless the header has a column of that name.
    pub fn parse(s: &str) -> Self {
        match s.parse() {
            Ok(i) => Self::Index(i),
            Err(_) => Self::Name(s.to_string()),
        }
    }

    fn resolve(&self, path: &Path, header: Option<&[String]>, cols: usize) -> Result<usize> {
        let by_name = |name: &str| header.and_then(|h| h.iter().position(|c| c == name));
        match self {
            Self::Name(name) => by_name(name).ok_or_else(|| {
                DataError::format(
                    path,
                    match header {
                        Some(h) => format!(
                            "--label-column {name}: no such column (the header has {})",
                            h.join(", ")
                        ),
                        None => format!(
                            "--label-column {name}: the file has no header row, give a 0-based column index"
                        ),
                    },
                )
            }),
            Self::Index(i) => match by_name(&i.to_string()) {
                Some(j) => Ok(j),
                None if *i < cols => Ok(*i),
                None => Err(DataError::format(
                    path,
                    format!("--label-column {i}: the rows have {cols} columns (0-based index)"),
                )),
            },
        }
    }
}

/// A table read from a file, before scaling: `rows` x `cols` features and optional labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub cols: usize,
    pub values: Vec<f64>,
    /// Column names, from a CSV header row.
    pub header: Option<Vec<String>>,
    pub labels: Option<Vec<u32>>,
    pub num_classes: Option<usize>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Scales the features and makes the dataset.
    pub fn into_dataset(mut self, normalize: Normalize) -> Result<Dataset> {
        normalize.apply(&mut self.values, self.cols);
        Dataset::new(
            DataShape::tabular(self.cols),
            Values::F32(self.values.into_iter().map(|v| v as f32).collect()),
            self.labels,
            self.num_classes,
        )
    }
}

/// The most label classes a table may have.
pub const MAX_CLASSES: usize = 100_000;

/// Turns the label texts of a column into class numbers: non-negative integers are kept as they
/// are (classes 0..=max), anything else is numbered in sorted order of the distinct texts.
fn label_classes(path: &Path, texts: Vec<String>) -> Result<(Vec<u32>, usize)> {
    let ints: Option<Vec<u32>> = texts.iter().map(|t| t.parse::<u32>().ok()).collect();
    if let Some(ints) = ints {
        let max = ints.iter().copied().max().unwrap_or(0) as usize;
        if max >= MAX_CLASSES {
            return Err(DataError::format(
                path,
                format!("label {max} is too large (at most {} classes)", MAX_CLASSES),
            ));
        }
        return Ok((ints, max + 1));
    }
    let mut names = texts.clone();
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_CLASSES {
        return Err(DataError::format(
            path,
            format!(
                "{} distinct labels (at most {MAX_CLASSES} classes)",
                names.len()
            ),
        ));
    }
    let labels = texts
        .iter()
        .map(|t| names.binary_search(t).map_or(0, |i| i as u32))
        .collect();
    Ok((labels, names.len()))
}

/// Reads a CSV file of numbers, one example a row. A first row that is not all numbers is a
/// header. With `label_column`, that column holds labels (integers, or names of classes).
pub fn read_csv(path: &Path, label_column: Option<&LabelColumn>) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(std::io::BufReader::new(file));
    let line_of = |r: &csv::StringRecord| r.position().map_or(0, |p| p.line());
    let csv_err = |e: csv::Error| {
        let msg = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                pos,
                expected_len,
                len,
            } => format!(
                "line {}: {len} fields where the first row has {expected_len}",
                pos.as_ref().map_or(0, |p| p.line())
            ),
            csv::ErrorKind::Utf8 { pos, .. } => format!(
                "line {}: not valid UTF-8 (is this a CSV file?)",
                pos.as_ref().map_or(0, |p| p.line())
            ),
            _ => e.to_string(),
        };
        DataError::format(path, msg)
    };
    let mut records = reader.records();
    let first = match records.next() {
        None => return Err(DataError::format(path, "empty file: no rows")),
        Some(r) => r.map_err(csv_err)?,
    };
    let cols = first.len();
    // The first row is a header unless its fields (the label column aside) are all numbers; a
    // label column given by name needs a header.
    let header = match label_column {
        Some(LabelColumn::Name(_)) => true,
        Some(LabelColumn::Index(i)) => first
            .iter()
            .enumerate()
            .any(|(c, f)| c != *i && f.parse::<f64>().is_err()),
        None => first.iter().any(|f| f.parse::<f64>().is_err()),
    }
    .then(|| first.iter().map(str::to_string).collect::<Vec<_>>());
    let label_col = label_column
        .map(|l| l.resolve(path, header.as_deref(), cols))
        .transpose()?;
    let feature_cols = cols - usize::from(label_col.is_some());
    if feature_cols == 0 {
        return Err(DataError::format(
            path,
            "no feature columns (a table needs at least one column besides the labels)",
        ));
    }
    let mut values = Vec::new();
    let mut label_texts = Vec::new();
    let name_of = |c: usize| match &header {
        Some(h) => format!("column {c} (`{}`)", h[c]),
        None => format!("column {c}"),
    };
    let mut add = |r: &csv::StringRecord| -> Result<()> {
        for (c, field) in r.iter().enumerate() {
            if Some(c) == label_col {
                label_texts.push(field.to_string());
                continue;
            }
            let v: f64 = field.parse().map_err(|_| {
                DataError::format(
                    path,
                    format!(
                        "line {}, {}: `{field}` is not a number",
                        line_of(r),
                        name_of(c)
                    ),
                )
            })?;
            if !v.is_finite() {
                return Err(DataError::format(
                    path,
                    format!(
                        "line {}, {}: `{field}` is not finite",
                        line_of(r),
                        name_of(c)
                    ),
                ));
            }
            values.push(v);
        }
        Ok(())
    };
    if header.is_none() {
        add(&first)?;
    }
    for r in records {
        add(&r.map_err(csv_err)?)?;
    }
    if values.is_empty() {
        return Err(DataError::format(path, "no data rows after the header"));
    }
    let (labels, num_classes) = match label_col {
        Some(_) => {
            let (l, k) = label_classes(path, label_texts)?;
            (Some(l), Some(k))
        }
        None => (None, None),
    };
    let header = header.map(|h| {
        h.into_iter()
            .enumerate()
            .filter(|(c, _)| Some(*c) != label_col)
            .map(|(_, n)| n)
            .collect()
    });
    Ok(Table {
        cols: feature_cols,
        values,
        header,
        labels,
        num_classes,
    })
}

/// The element types of NPY arrays that are supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NpyType {
    F32,
    F64,
    U8,
}

impl NpyType {
    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
            Self::U8 => 1,
        }
    }
}

/// The largest NPY header we read (the format caps version 1 headers at 65535 bytes).
const MAX_NPY_HEADER: usize = 1 << 20;
/// Upper bound on the data of an NPY file we agree to read (16 GiB).
pub const MAX_NPY_BYTES: u64 = 1 << 34;

/// A value of the Python literal that an NPY header holds.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// Parses the dictionary literal of an NPY header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_npy_dict(text: &str) -> std::result::Result<Vec<(String, Py)>, String> {
    let s = text.trim_end_matches(['\n', ' ', '\0']).trim();
    let mut chars = s.char_indices().peekable();
    let mut out = Vec::new();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices>| {
        while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            it.next();
        }
    };
    let expect = |it: &mut std::iter::Peekable<std::str::CharIndices>, want: char| {
        skip_ws(it);
        match it.next() {
            Some((_, c)) if c == want => Ok(()),
            Some((i, c)) => Err(format!("expected `{want}` at byte {i}, found `{c}`")),
            None => Err(format!("expected `{want}`, found the end")),
        }
    };
    let string = |it: &mut std::iter::Peekable<std::str::CharIndices>| {
        skip_ws(it);
        let q = match it.next() {
            Some((_, q @ ('\'' | '"'))) => q,
            _ => return Err("expected a quoted string".to_string()),
        };
        let mut v = String::new();
        for (_, c) in it.by_ref() {
            if c == q {
                return Ok(v);
            }
            v.push(c);
        }
        Err("unterminated string".to_string())
    };
    expect(&mut chars, '{')?;
    loop {
        skip_ws(&mut chars);
        if let Some((_, '}')) = chars.peek() {
            chars.next();
            break;
        }
        let key = string(&mut chars)?;
        expect(&mut chars, ':')?;
        skip_ws(&mut chars);
        let value =
            match chars.peek() {
                Some((_, '\'' | '"')) => Py::Str(string(&mut chars)?),
                Some((_, '(')) => {
                    chars.next();
                    let mut dims = Vec::new();
                    let mut num = String::new();
                    loop {
                        match chars.next() {
                            Some((_, c)) if c.is_ascii_digit() => num.push(c),
                            Some((_, c @ (',' | ')'))) => {
                                let t = num.trim().to_string();
                                if !t.is_empty() {
                                    dims.push(t.parse::<u64>().map_err(|_| {
                                        format!("shape entry `{t}` is not a number")
                                    })?);
                                }
                                num.clear();
                                if c == ')' {
                                    break;
                                }
                            }
                            Some((_, c)) if c.is_whitespace() || c == 'L' => {}
                            Some((_, c)) => return Err(format!("unexpected `{c}` in the shape")),
                            None => return Err("unterminated shape".to_string()),
                        }
                    }
                    Py::Tuple(dims)
                }
                Some(_) => {
                    let mut word = String::new();
                    while chars.peek().is_some_and(|(_, c)| c.is_ascii_alphanumeric()) {
                        if let Some((_, c)) = chars.next() {
                            word.push(c);
                        }
                    }
                    match word.as_str() {
                        "True" => Py::Bool(true),
                        "False" => Py::Bool(false),
                        _ => return Err(format!("unsupported value `{word}` for `{key}`")),
                    }
                }
                None => return Err("unexpected end".to_string()),
            };
        out.push((key, value));
        skip_ws(&mut chars);
        match chars.next() {
            Some((_, ',')) => {}
            Some((_, '}')) => break,
            Some((i, c)) => return Err(format!("expected `,` or `}}` at byte {i}, found `{c}`")),
            None => return Err("unterminated dictionary".to_string()),
        }
    }
    Ok(out)
}

/// Reads the header of an NPY stream: (element type, rows, cols, header length in bytes).
fn npy_header<R: Read>(r: &mut R, path: &Path) -> Result<(NpyType, usize, usize, u64)> {
    let bad = |msg: String| DataError::format(path, msg);
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|_| bad("not an NPY file: shorter than the 8-byte preamble".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad(
            "not an NPY file: the magic string \\x93NUMPY is missing".into(),
        ));
    }
    let (major, minor) = (pre[6], pre[7]);
    let (hlen, pre_len) = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|_| bad("truncated NPY header".into()))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|_| bad("truncated NPY header".into()))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        _ => {
            return Err(bad(format!(
                "NPY format version {major}.{minor} is not supported (expected 1.0, 2.0 or 3.0)"
            )))
        }
    };
    if hlen > MAX_NPY_HEADER {
        return Err(bad(format!(
            "NPY header of {hlen} bytes is larger than the {MAX_NPY_HEADER} allowed"
        )));
    }
    let mut head = vec![0u8; hlen];
    r.read_exact(&mut head)
        .map_err(|_| bad(format!("truncated NPY header (it claims {hlen} bytes)")))?;
    let text = std::str::from_utf8(&head).map_err(|_| bad("NPY header is not text".into()))?;
    let dict = parse_npy_dict(text).map_err(|e| bad(format!("malformed NPY header: {e}")))?;
    let get = |k: &str| dict.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Py::Str(d)) => d.clone(),
        _ => return Err(bad("NPY header lacks `descr`".into())),
    };
    let ty = match descr.as_str() {
        "<f4" => NpyType::F32,
        "<f8" => NpyType::F64,
        "|u1" | "<u1" | ">u1" => NpyType::U8,
        d if d.starts_with('>') => {
            return Err(bad(format!(
                "NPY dtype `{d}` is big-endian; only little-endian <f4, <f8 and |u1 are supported (convert with arr.astype('<f4'))"
            )))
        }
        d => {
            return Err(bad(format!(
                "NPY dtype `{d}` is not supported (expected <f4, <f8 or |u1)"
            )))
        }
    };
    match get("fortran_order") {
        Some(Py::Bool(false)) => {}
        Some(Py::Bool(true)) => {
            return Err(bad(
                "NPY array is in Fortran order; save it in C order (np.ascontiguousarray)".into(),
            ))
        }
        _ => return Err(bad("NPY header lacks `fortran_order`".into())),
    }
    let shape = match get("shape") {
        Some(Py::Tuple(s)) => s.clone(),
        _ => return Err(bad("NPY header lacks `shape`".into())),
    };
    let [rows, cols] = shape[..] else {
        return Err(bad(format!(
            "NPY array has shape {shape:?}; expected 2 dimensions (examples, features)"
        )));
    };
    if rows == 0 || cols == 0 {
        return Err(bad(format!(
            "NPY array of shape ({rows}, {cols}) holds no examples"
        )));
    }
    rows.checked_mul(cols)
        .and_then(|n| n.checked_mul(ty.size() as u64))
        .filter(|&b| b <= MAX_NPY_BYTES)
        .ok_or_else(|| {
            bad(format!(
                "NPY shape ({rows}, {cols}) of {descr} claims more than the {MAX_NPY_BYTES} bytes allowed"
            ))
        })?;
    Ok((ty, rows as usize, cols as usize, (pre_len + hlen) as u64))
}

/// Reads a 2-D NPY array (little-endian f32, f64 or u8, C order) of examples x features. With
/// `label_column` (an index), that column holds integer labels.
pub fn read_npy(path: &Path, label_column: Option<&LabelColumn>) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut r = std::io::BufReader::new(file);
    let (ty, rows, cols, head) = npy_header(&mut r, path)?;
    let body = (rows as u64) * (cols as u64) * ty.size() as u64;
    let have = len.saturating_sub(head);
    if have < body {
        return Err(DataError::format(
            path,
            format!("truncated: shape ({rows}, {cols}) needs {body} bytes of data, the file holds {have}"),
        ));
    }
    if have > body {
        return Err(DataError::format(
            path,
            format!(
                "{} trailing bytes after the {body} bytes of the array",
                have - body
            ),
        ));
    }
    let mut raw = Vec::with_capacity(body as usize);
    r.take(body)
        .read_to_end(&mut raw)
        .map_err(|e| DataError::io(path, e))?;
    if raw.len() as u64 != body {
        return Err(DataError::format(path, "truncated while reading the data"));
    }
    let mut all: Vec<f64> = match ty {
        NpyType::U8 => raw.iter().map(|&b| b as f64).collect(),
        NpyType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        NpyType::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
    };
    drop(raw);
    if let Some(pos) = all.iter().position(|v| !v.is_finite()) {
        return Err(DataError::format(
            path,
            format!(
                "row {}, column {}: value {} is not finite",
                pos / cols,
                pos % cols,
                all[pos]
            ),
        ));
    }
    let label_col = match label_column {
        None => None,
        Some(LabelColumn::Name(n)) => {
            return Err(DataError::format(
                path,
                format!(
                    "--label-column {n}: an NPY file has no column names, give a 0-based index"
                ),
            ))
        }
        Some(l) => Some(l.resolve(path, None, cols)?),
    };
    let (labels, num_classes, cols) = match label_col {
        None => (None, None, cols),
        Some(lc) => {
            if cols < 2 {
                return Err(DataError::format(
                    path,
                    "no feature columns (a table needs at least one column besides the labels)",
                ));
            }
            let mut labels = Vec::with_capacity(rows);
            for (r, row) in all.chunks_exact(cols).enumerate() {
                let v = row[lc];
                if v < 0.0 || v.fract() != 0.0 || v >= MAX_CLASSES as f64 {
                    return Err(DataError::format(
                        path,
                        format!("row {r}, label column {lc}: {v} is not a class number (an integer in 0..{MAX_CLASSES})"),
                    ));
                }
                labels.push(v as u32);
            }
            let mut w = 0;
            for i in 0..all.len() {
                if i % cols != lc {
                    all[w] = all[i];
                    w += 1;
                }
            }
            all.truncate(w);
            let k = labels.iter().copied().max().unwrap_or(0) as usize + 1;
            (Some(labels), Some(k), cols - 1)
        }
    };
    Ok(Table {
        cols,
        values: all,
        header: None,
        labels,
        num_classes,
    })
}

/// Encodes a 2-D little-endian f32 array as an NPY (version 1.0) file (used by tests and tools).
pub fn encode_npy_f32(rows: usize, cols: usize, values: &[f32]) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // The preamble and header together are padded with spaces to a multiple of 64, ending in \n.
    let unpadded = 10 + dict.len() + 1;
    let pad = unpadded.div_ceil(64) * 64 - unpadded;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
