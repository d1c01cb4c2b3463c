//! What a batch translates: a manifest file (CSV with a header, or JSON Lines) or a grid of
//! sketches x exemplars x seeds, read as a stream of numbered [`Entry`]s.
//!
//! Entries are numbered 0, 1, ... in file order (blank lines do not count), and a malformed
//! line still takes its number, so that the numbering, and with it [`Shard`], does not depend on
//! what can be parsed. Relative paths are taken relative to the manifest's folder.
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::sampling::silhouette::Silhouette;

/// File extensions a grid takes from a folder.
const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "webp", "safetensors"];

/// The manifest's columns (CSV header names, JSON keys).
pub const COLUMNS: [&str; 5] = ["condition", "exemplar", "exemplar_label", "seed", "output"];

/// One pair to translate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// One edge-map PNG or `.safetensors` tensor (several paths: one PNG per channel).
    pub condition: Vec<PathBuf>,
    pub exemplar: PathBuf,
    /// Empty: the exemplar's Canny edges (one-channel models).
    pub exemplar_label: Vec<PathBuf>,
    pub seed: u64,
    /// File name of the result, relative to the output folder.
    pub output: PathBuf,
}

/// A numbered manifest entry: the pair, or why its line could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub index: usize,
    pub pair: std::result::Result<Pair, String>,
}

/// `--shard i/N`: entry `j` belongs to shard `i` when `j % N == i` (0-based `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    pub fn contains(&self, entry: usize) -> bool {
        entry % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("shard {s:?}: expected i/N with 0 <= i < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

/// A grid: every sketch with every exemplar (or with its best-fitting few, [`Grid::keep_best`])
/// and every seed (in that nesting order).
#[derive(Debug, Clone)]
pub struct Grid {
    pub sketches: Vec<PathBuf>,
    pub exemplars: Vec<PathBuf>,
    pub seeds: Vec<u64>,
    /// Per sketch, the indices of the exemplars it is paired with, best first; none: all.
    picks: Option<Vec<Vec<usize>>>,
}

impl Grid {
    /// Folders among `sketches` / `exemplars` expand to their image files, sorted by name.
    pub fn new(sketches: &[PathBuf], exemplars: &[PathBuf], seeds: Vec<u64>) -> Result<Self> {
        let grid = Self {
            sketches: expand(sketches)?,
            exemplars: expand(exemplars)?,
            seeds,
            picks: None,
        };
        crate::error::ensure!(
            !grid.sketches.is_empty() && !grid.exemplars.is_empty() && !grid.seeds.is_empty(),
            "the grid is empty: {} sketches, {} exemplars, {} seeds",
            grid.sketches.len(),
            grid.exemplars.len(),
            grid.seeds.len()
        );
        Ok(grid)
    }

    pub fn len(&self) -> usize {
        self.sketches.len() * self.per_sketch() * self.seeds.len()
    }

    /// Exemplars paired with each sketch.
    fn per_sketch(&self) -> usize {
        self.picks
            .as_ref()
            .and_then(|p| p.first())
            .map_or(self.exemplars.len(), Vec::len)
    }

    /// Pairs each sketch only with the `k` exemplars whose outlines fit it best
    /// ([`Silhouette::similarity`], the editor gallery's first ranking key), best first, ties in
    /// the exemplars' order. Images are read at the model's `size` as a run reads them. No
    /// network runs (plain f32 and integer arithmetic on the host), so the shards of a sweep,
    /// each picking for itself, pick the same pairs. A file that cannot be read ranks last, and
    /// its pairs then fail with the reader's error.
    pub fn keep_best(&mut self, k: usize, size: usize, label_nc: usize) {
        let device = candle_core::Device::Cpu;
        let exemplars: Vec<Option<Silhouette>> = self
            .exemplars
            .iter()
            .map(|p| {
                let (t, _, _) = crate::image::load_exemplar(p, size, &device).ok()?;
                Silhouette::of_exemplar(&t).ok().flatten()
            })
            .collect();
        let picks = self
            .sketches
            .iter()
            .map(|sketch| {
                let shape = crate::image::load_condition(
                    std::slice::from_ref(sketch),
                    label_nc,
                    size,
                    &device,
                )
                .ok()
                .and_then(|(t, _)| Silhouette::of_condition(&t).ok().flatten());
                let score: Vec<f32> = exemplars
                    .iter()
                    .map(|e| match (&shape, e) {
                        (Some(a), Some(b)) => a.similarity(b),
                        _ => -1.0,
                    })
                    .collect();
                let mut order: Vec<usize> = (0..exemplars.len()).collect();
                // Stable: equal scores keep the exemplars' order.
                order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
                order.truncate(k.max(1));
                order
            })
            .collect();
        self.picks = Some(picks);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `j` (computed, not stored: a grid of any size costs its path lists only).
    pub fn entry(&self, j: usize) -> Entry {
        let (ne, ns) = (self.per_sketch(), self.seeds.len());
        let s = j / (ne * ns);
        let e = (j / ns) % ne;
        let e = self.picks.as_ref().map_or(e, |p| p[s][e]);
        let (sketch, exemplar) = (&self.sketches[s], &self.exemplars[e]);
        let seed = self.seeds[j % ns];
        Entry {
            index: j,
            pair: Ok(Pair {
                condition: vec![sketch.clone()],
                exemplar: exemplar.clone(),
                exemplar_label: Vec::new(),
                seed,
                output: default_output(sketch, exemplar, seed),
            }),
        }
    }
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let read = std::fs::read_dir(p)
            .map_err(|e| Error::Invalid(format!("{}: cannot list: {e}", p.display())))?;
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.is_file()
                    && f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

/// `{condition stem}__{exemplar stem}__s{seed}.png`: the name of a result when none is given.
pub fn default_output(condition: &Path, exemplar: &Path, seed: u64) -> PathBuf {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(|| "input".into(), |s| s.to_string_lossy().to_string())
    };
    PathBuf::from(format!(
        "{}__{}__s{seed}.png",
        stem(condition),
        stem(exemplar)
    ))
}

/// Where entries come from.
#[derive(Debug, Clone)]
pub enum Manifest {
    Csv { path: PathBuf, default_seed: u64 },
    Jsonl { path: PathBuf, default_seed: u64 },
    Grid(Grid),
}

impl Manifest {
    /// A manifest file: `.csv` is CSV; `.jsonl`, `.ndjson` and `.json` are JSON Lines; other
    /// names are JSON Lines when the first non-blank character is `{`. Rows without a seed get
    /// `default_seed`. The CSV header is checked here.
    pub fn open(path: &Path, default_seed: u64) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let path = path.to_path_buf();
        let csv = match ext.as_deref() {
            Some("csv") => true,
            Some("jsonl" | "ndjson" | "json") => false,
            _ => {
                let text = std::fs::read(&path).map_err(|e| io(&path, e))?;
                let first = text.iter().find(|b| !b.is_ascii_whitespace());
                first != Some(&b'{')
            }
        };
        if csv {
            let m = Self::Csv { path, default_seed };
            m.csv_reader()?;
            Ok(m)
        } else {
            File::open(&path).map_err(|e| io(&path, e))?;
            Ok(Self::Jsonl { path, default_seed })
        }
    }

    /// The entries, read lazily from the file.
    pub fn entries(&self) -> Result<Box<dyn Iterator<Item = Entry> + '_>> {
        match self {
            Self::Grid(g) => Ok(Box::new((0..g.len()).map(|j| g.entry(j)))),
            Self::Csv { path, default_seed } => {
                let (header, rows) = self.csv_reader()?;
                let base = base_dir(path);
                let seed = *default_seed;
                Ok(Box::new(rows.enumerate().map(move |(index, row)| {
                    let pair = row
                        .map_err(|e| e.to_string())
                        .and_then(|r| csv_record(&header, r))
                        .and_then(|r| r.into_pair(&base, seed));
                    Entry { index, pair }
                })))
            }
            Self::Jsonl { path, default_seed } => {
                let file = File::open(path).map_err(|e| io(path, e))?;
                let base = base_dir(path);
                let seed = *default_seed;
                let lines = BufReader::new(file)
                    .lines()
                    .filter(|l| !l.as_ref().is_ok_and(|l| l.trim().is_empty()));
                Ok(Box::new(lines.enumerate().map(move |(index, line)| {
                    let pair = line
                        .map_err(|e| e.to_string())
                        .and_then(|l| serde_json::from_str::<Record>(&l).map_err(|e| e.to_string()))
                        .and_then(|r| r.into_pair(&base, seed));
                    Entry { index, pair }
                })))
            }
        }
    }

    /// The number of entries (a counting pass over a file; nothing is kept).
    pub fn count(&self) -> Result<usize> {
        Ok(match self {
            Self::Grid(g) => g.len(),
            _ => self.entries()?.count(),
        })
    }

    /// The header's column positions and the data rows.
    fn csv_reader(&self) -> Result<(Vec<String>, CsvRows<BufReader<File>>)> {
        let Self::Csv { path, .. } = self else {
            unreachable!("csv_reader on a non-CSV manifest")
        };
        let file = File::open(path).map_err(|e| io(path, e))?;
        let mut rows = CsvRows::new(BufReader::new(file));
        let header = match rows.next() {
            Some(h) => h.map_err(|e| io(path, e))?,
            None => {
                return Err(Error::Invalid(format!(
                    "{}: empty manifest",
                    path.display()
                )))
            }
        };
        let header: Vec<String> = header
            .into_iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        if let Some(bad) = header.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
            return Err(Error::Invalid(format!(
                "{}: unknown column {bad:?} in the header (columns: {})",
                path.display(),
                COLUMNS.join(", ")
            )));
        }
        for need in ["condition", "exemplar"] {
            crate::error::ensure!(
                header.iter().any(|h| h == need),
                "{}: the header has no {need:?} column (columns: {})",
                path.display(),
                COLUMNS.join(", ")
            );
        }
        Ok((header, rows))
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

fn base_dir(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// One or several paths (a JSON string or array).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum Paths {
    One(String),
    Many(Vec<String>),
}

/// A manifest row as written (CSV cells by header name, or a JSON object).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    condition: Paths,
    exemplar: String,
    #[serde(default)]
    exemplar_label: Option<Paths>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    output: Option<String>,
}

fn csv_record(header: &[String], row: Vec<String>) -> std::result::Result<Record, String> {
    if row.len() != header.len() {
        return Err(format!(
            "{} fields, the header has {}",
            row.len(),
            header.len()
        ));
    }
    let cell = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .map(|i| row[i].trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let seed = match cell("seed") {
        Some(s) => Some(
            s.parse()
                .map_err(|_| format!("seed {s:?} is not a number"))?,
        ),
        None => None,
    };
    Ok(Record {
        condition: Paths::One(cell("condition").ok_or("no condition")?),
        exemplar: cell("exemplar").ok_or("no exemplar")?,
        exemplar_label: cell("exemplar_label").map(Paths::One),
        seed,
        output: cell("output"),
    })
}

impl Record {
    fn into_pair(self, base: &Path, default_seed: u64) -> std::result::Result<Pair, String> {
        let resolve = |p: String| base.join(p);
        let many = |p: Paths| -> Vec<PathBuf> {
            match p {
                Paths::One(s) => vec![resolve(s)],
                Paths::Many(v) => v.into_iter().map(resolve).collect(),
            }
        };
        let condition = many(self.condition);
        if condition.is_empty() {
            return Err("no condition".into());
        }
        let exemplar = resolve(self.exemplar);
        let seed = self.seed.unwrap_or(default_seed);
        let output = match self.output {
            Some(o) => checked_output(&o)?,
            None => default_output(&condition[0], &exemplar, seed),
        };
        Ok(Pair {
            condition,
            exemplar,
            exemplar_label: self.exemplar_label.map(many).unwrap_or_default(),
            seed,
            output,
        })
    }
}

/// An output name must stay inside the output folder and be a PNG.
fn checked_output(name: &str) -> std::result::Result<PathBuf, String> {
    let p = PathBuf::from(name);
    let inside = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "output {name:?} must be a relative path inside the output folder"
        ));
    }
    if !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(format!("output {name:?} must end in .png"));
    }
    Ok(p)
}

/// Streaming CSV (RFC 4180: quoted fields with `""` escapes and embedded newlines); blank
/// lines are skipped.
struct CsvRows<R> {
    reader: R,
}

impl<R: BufRead> CsvRows<R> {
    fn new(reader: R) -> Self {
        Self { reader }
    }

    fn record(&mut self) -> std::io::Result<Option<Vec<String>>> {
        let (mut fields, mut field, mut quoted, mut any) =
            (Vec::new(), String::new(), false, false);
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                if quoted {
                    return Err(std::io::Error::other("unterminated quoted field"));
                }
                if !any {
                    return Ok(None);
                }
                fields.push(field);
                return Ok(Some(fields));
            }
            if !any && !quoted && line.trim().is_empty() {
                continue;
            }
            any = true;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (quoted, c) {
                    (true, '"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    (true, '"') => quoted = false,
                    (true, c) => field.push(c),
                    (false, '"') => quoted = true,
                    (false, ',') => fields.push(std::mem::take(&mut field)),
                    (false, '\r' | '\n') => {}
                    (false, c) => field.push(c),
                }
            }
            if !quoted {
                fields.push(field);
                return Ok(Some(fields));
            }
        }
    }
}

impl<R: BufRead> Iterator for CsvRows<R> {
    type Item = std::io::Result<Vec<String>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.record().transpose()
    }
}

/// Output names already taken in this run (names only, so memory grows with the name list,
/// never with images).
#[derive(Debug, Default)]
pub struct OutputNames(HashSet<PathBuf>);

impl OutputNames {
    /// False when `name` was taken by an earlier entry.
    pub fn claim(&mut self, name: &Path) -> bool {
        self.0.insert(name.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_handle_quotes_and_blank_lines() {
        let text = "a,b\n\n\"x, y\",\"say \"\"hi\"\"\"\n\"multi\nline\",z\r\n";
        let rows: Vec<Vec<String>> = CsvRows::new(text.as_bytes()).map(|r| r.unwrap()).collect();
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x, y".into(), "say \"hi\"".into()],
                vec!["multi\nline".into(), "z".into()],
            ]
        );
        assert!(CsvRows::new("\"open,x\n".as_bytes())
            .next()
            .unwrap()
            .is_err());
    }

    #[test]
    fn shard_parses_and_validates() {
        let s: Shard = "2/5".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 5 });
        assert!(s.contains(7) && !s.contains(8));
        for bad in ["5/5", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn output_names_stay_inside() {
        assert!(checked_output("a/b.png").is_ok());
        assert!(checked_output("../b.png").is_err());
        assert!(checked_output("/tmp/b.png").is_err());
        assert!(checked_output("b.jpg").is_err());
    }
}
