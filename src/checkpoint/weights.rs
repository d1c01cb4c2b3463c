//! One weight file, indexed without reading tensor data: safetensors (header parsed by the
//! `safetensors` crate), or a PyTorch zip checkpoint (`.ckpt` / `.pth` / `.pt`, our own pickle
//! reader). Tensors are read on demand, only those asked for, one at a time.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::error::io_error;
use super::pickle::{self, TensorRef};
use super::LoadError;

/// Container format of a weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// `torch.save` zip archive with a pickled object.
    TorchZip,
}

/// Name, shape and dtype of one stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// A safetensors tensor's data: `len` bytes from file offset `start`; `entry` indexes
/// [`WeightsFile::entries`] (its shape and dtype).
struct Stored {
    start: u64,
    len: usize,
    entry: usize,
}

enum Inner {
    Safetensors {
        /// Where each tensor's data lies in the file, by name.
        stored: HashMap<String, Stored>,
    },
    Torch {
        root: String,
        refs: HashMap<String, TensorRef>,
    },
}

/// An indexed weight file.
pub struct WeightsFile {
    pub path: PathBuf,
    pub format: Format,
    /// Tensors in stored order (for torch files: the order of the state dict).
    pub entries: Vec<TensorEntry>,
    /// State-dict entries that are not tensors (torch files only).
    pub non_tensors: Vec<String>,
    inner: Inner,
}

/// First bytes of the legacy (pre-1.6, non-zip) `torch.save` format: a pickled magic number.
const LEGACY_TORCH_MAGIC: [u8; 4] = [0x80, 0x02, 0x8a, 0x0a];

impl WeightsFile {
    /// Indexes `path`, choosing the format from the file's first bytes (not its name), so that a
    /// misnamed file gets an error about what it is.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let mut f = File::open(path).map_err(|e| io_error(path, e))?;
        let len = f.metadata().map_err(|e| io_error(path, e))?.len();
        if len == 0 {
            return Err(LoadError::EmptyFile(path.to_path_buf()));
        }
        let mut head = [0u8; 4];
        let n = f.read(&mut head).map_err(|e| io_error(path, e))?;
        let is_zip = n == 4 && &head == b"PK\x03\x04";
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if is_zip {
            Self::open_torch(path, f)
        } else if n == 4 && head == LEGACY_TORCH_MAGIC {
            Err(LoadError::NotCheckpoint {
                path: path.to_path_buf(),
                reason:
                    "legacy (non-zip) PyTorch format, written by torch < 1.6 or with \
                         _use_new_zipfile_serialization=False; re-save it with a current torch.save"
                        .into(),
            })
        } else if matches!(ext.as_str(), "ckpt" | "pth" | "pt" | "bin") {
            Err(LoadError::NotCheckpoint {
                path: path.to_path_buf(),
                reason: "not a zip archive (torch.save writes zip archives)".into(),
            })
        } else {
            Self::open_safetensors(path, f, len)
        }
    }

    fn open_safetensors(path: &Path, mut f: File, len: u64) -> Result<Self, LoadError> {
        let not_st = |reason: String| LoadError::NotSafetensors {
            path: path.to_path_buf(),
            reason,
        };
        let truncated = |reason: String| LoadError::Truncated {
            path: path.to_path_buf(),
            reason,
        };
        if len < 8 {
            return Err(not_st(format!(
                "{len} bytes, shorter than the 8-byte header length"
            )));
        }
        f.seek(SeekFrom::Start(0)).map_err(|e| io_error(path, e))?;
        let mut n = [0u8; 8];
        f.read_exact(&mut n).map_err(|e| io_error(path, e))?;
        let n = u64::from_le_bytes(n);
        // The format caps headers at 100 MB; a bigger number means this is not safetensors.
        if n > 100_000_000 {
            return Err(not_st(format!("header length field {n} is not plausible")));
        }
        if 8 + n > len {
            return Err(truncated(format!(
                "header of {n} bytes, but the file has only {len} bytes"
            )));
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header).map_err(|e| io_error(path, e))?;
        // The safetensors crate parses and validates the header (dtypes, shapes against data
        // offsets, contiguous offsets); what it finds wrong makes this "not a safetensors file".
        let meta: safetensors::tensor::Metadata =
            serde_json::from_slice(&header).map_err(|e| not_st(format!("invalid header ({e})")))?;
        let expected = 8 + n + meta.data_len() as u64;
        if len < expected {
            return Err(truncated(format!(
                "the header describes {expected} bytes, but the file has only {len} (cut short?)"
            )));
        }
        if len > expected {
            return Err(not_st(format!(
                "{} bytes after the last tensor",
                len - expected
            )));
        }
        // In the writer's order (by data offset).
        let mut entries = Vec::new();
        for name in meta.offset_keys() {
            let info = meta.info(&name).expect("a key of this header");
            let dtype = DType::try_from(info.dtype).map_err(|_| {
                not_st(format!("tensor {name}: unsupported dtype {:?}", info.dtype))
            })?;
            entries.push(TensorEntry {
                name,
                shape: info.shape.clone(),
                dtype,
            });
        }
        let data_start = 8 + n;
        let stored = entries
            .iter()
            .enumerate()
            .map(|(entry, e)| {
                let (begin, end) = meta.info(&e.name).expect("indexed above").data_offsets;
                let start = data_start + begin as u64;
                let len = end - begin;
                (e.name.clone(), Stored { start, len, entry })
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            format: Format::Safetensors,
            entries,
            non_tensors: Vec::new(),
            inner: Inner::Safetensors { stored },
        })
    }

    fn open_torch(path: &Path, f: File) -> Result<Self, LoadError> {
        let not_ckpt = |reason: String| LoadError::NotCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let mut zip =
            zip::ZipArchive::new(BufReader::new(f)).map_err(|e| LoadError::Truncated {
                path: path.to_path_buf(),
                reason: format!("unreadable zip archive ({e}); the file may be cut short"),
            })?;
        let names: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect();
        // The root folder differs between files (`archive/`, `epoch_4/`, ...): find records by suffix.
        let pkls: Vec<&String> = names.iter().filter(|n| n.ends_with("data.pkl")).collect();
        let pkl = match pkls.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(not_ckpt("zip archive without a data.pkl record".into())),
            _ => return Err(not_ckpt(format!("several data.pkl records: {pkls:?}"))),
        };
        let root = pkl.strip_suffix("data.pkl").unwrap().to_string();
        let pickle_err = |reason: String| LoadError::Pickle {
            path: path.to_path_buf(),
            reason,
        };
        if let Ok(mut rec) = zip.by_name(&format!("{root}byteorder")) {
            let mut s = String::new();
            rec.read_to_string(&mut s).map_err(|e| io_error(path, e))?;
            if s.trim() != "little" {
                return Err(pickle_err(format!(
                    "byte order {:?} is not supported",
                    s.trim()
                )));
            }
        }
        let mut data = Vec::new();
        zip.by_name(&pkl)
            .map_err(|e| pickle_err(format!("cannot open {pkl}: {e}")))?
            .read_to_end(&mut data)
            .map_err(|e| pickle_err(format!("cannot read {pkl}: {e}")))?;
        let top = pickle::unpickle(&data).map_err(pickle_err)?;
        let sd = pickle::state_dict(&top).map_err(pickle_err)?;
        let mut entries = Vec::with_capacity(sd.tensors.len());
        let mut refs = HashMap::with_capacity(sd.tensors.len());
        for (name, t) in sd.tensors {
            entries.push(TensorEntry {
                name: name.clone(),
                shape: t.shape.clone(),
                dtype: t.storage.dtype,
            });
            if refs.insert(name.clone(), t).is_some() {
                return Err(pickle_err(format!(
                    "key {name} appears twice in the state dict"
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            format: Format::TorchZip,
            entries,
            non_tensors: sd.non_tensors,
            inner: Inner::Torch { root, refs },
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.inner {
            Inner::Safetensors { stored } => stored.contains_key(name),
            Inner::Torch { refs, .. } => refs.contains_key(name),
        }
    }

    /// The storage record a torch tensor views (for checking that storages are shared).
    pub fn storage_key(&self, name: &str) -> Option<&str> {
        match &self.inner {
            Inner::Torch { refs, .. } => refs.get(name).map(|t| t.storage.key.as_str()),
            Inner::Safetensors { .. } => None,
        }
    }

    /// Reads every tensor.
    pub fn load_all(&self, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        self.load(&names, device)
    }

    /// Reads the named tensors (each storage record is read once, however many tensors share it).
    pub fn load(
        &self,
        names: &[&str],
        device: &Device,
    ) -> Result<HashMap<String, Tensor>, LoadError> {
        let path = &self.path;
        let missing = |n: &str| LoadError::MissingKeys {
            files: vec![path.clone()],
            keys: vec![n.to_string()],
            unexpected: Vec::new(),
        };
        let cerr = |e: candle_core::Error| LoadError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        };
        let mut out = HashMap::with_capacity(names.len());
        match &self.inner {
            Inner::Safetensors { stored } => {
                // Read tensor by tensor rather than memory-mapped: a mapping keeps every page it
                // touched resident until it is dropped, so loading the official UNet (1.1 GB)
                // from a mapping held file pages and the copied tensors at once (peak memory
                // 2.8 GB for a 1.3 GB model). Here the peak is the model plus one tensor's bytes.
                let mut f = BufReader::new(File::open(path).map_err(|e| io_error(path, e))?);
                for &name in names {
                    let s = stored.get(name).ok_or_else(|| missing(name))?;
                    let t = f
                        .seek(SeekFrom::Start(s.start))
                        .and_then(|_| read_tensor(&mut f, s.len, &self.entries[s.entry], device))
                        .map_err(|e| io_error(path, e))?;
                    out.insert(name.to_string(), t);
                }
            }
            Inner::Torch { root, refs } => {
                let f = File::open(path).map_err(|e| io_error(path, e))?;
                let mut zip =
                    zip::ZipArchive::new(BufReader::new(f)).map_err(|e| LoadError::Truncated {
                        path: path.clone(),
                        reason: format!("unreadable zip archive ({e})"),
                    })?;
                // Storages are shared across keys: read each once, drop it after its last use.
                let mut uses: HashMap<&str, usize> = HashMap::new();
                for &name in names {
                    let t = refs.get(name).ok_or_else(|| missing(name))?;
                    *uses.entry(t.storage.key.as_str()).or_default() += 1;
                }
                let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
                for &name in names {
                    let t = &refs[name];
                    let key = t.storage.key.as_str();
                    if !cache.contains_key(key) {
                        let bytes = read_storage(&mut zip, path, root, t)?;
                        cache.insert(key.to_string(), bytes);
                    }
                    let tensor = materialize(t, &cache[key], device).map_err(cerr)?;
                    out.insert(name.to_string(), tensor);
                    let n = uses.get_mut(key).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        cache.remove(key);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// One safetensors tensor of `len` bytes at the reader's position. f32 data (the official
/// checkpoints' dtype, and little-endian as the format prescribes) is read straight into the
/// tensor's storage; other dtypes through a byte buffer (a second transient copy). candle's
/// errors come back as I/O errors of the file, as the mapped reader's did.
fn read_tensor(
    f: &mut impl Read,
    len: usize,
    e: &TensorEntry,
    device: &Device,
) -> std::io::Result<Tensor> {
    let tensor = if e.dtype == DType::F32 && cfg!(target_endian = "little") && len.is_multiple_of(4)
    {
        let mut v = vec![0f32; len / 4];
        f.read_exact(bytemuck::cast_slice_mut(&mut v))?;
        Tensor::from_vec(v, e.shape.as_slice(), device)
    } else {
        let mut bytes = vec![0u8; len];
        f.read_exact(&mut bytes)?;
        Tensor::from_raw_buffer(&bytes, e.dtype, &e.shape, device)
    };
    tensor.map_err(std::io::Error::other)
}

fn read_storage(
    zip: &mut zip::ZipArchive<BufReader<File>>,
    path: &Path,
    root: &str,
    t: &TensorRef,
) -> Result<Vec<u8>, LoadError> {
    let record = format!("{root}data/{}", t.storage.key);
    let want = t.storage.numel * t.storage.dtype.size_in_bytes();
    let mut rec = zip.by_name(&record).map_err(|e| LoadError::Truncated {
        path: path.to_path_buf(),
        reason: format!("storage record {record} is missing ({e})"),
    })?;
    let mut bytes = Vec::with_capacity(want.min(rec.size() as usize));
    rec.read_to_end(&mut bytes)
        .map_err(|e| LoadError::Truncated {
            path: path.to_path_buf(),
            reason: format!("reading storage record {record}: {e}"),
        })?;
    if bytes.len() < want {
        return Err(LoadError::Truncated {
            path: path.to_path_buf(),
            reason: format!(
                "storage record {record} has {} bytes, {want} expected",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// Builds the tensor a strided view describes from its storage bytes.
fn materialize(t: &TensorRef, storage: &[u8], device: &Device) -> candle_core::Result<Tensor> {
    let es = t.storage.dtype.size_in_bytes();
    let numel = t.numel();
    if numel == 0 {
        return Tensor::zeros(t.shape.as_slice(), t.storage.dtype, device);
    }
    if t.is_contiguous() {
        let bytes = &storage[t.offset * es..(t.offset + numel) * es];
        return Tensor::from_raw_buffer(bytes, t.storage.dtype, &t.shape, device);
    }
    // General strided view (never in the authors' files): gather element by element.
    let mut out = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[off * es..(off + 1) * es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_raw_buffer(&out, t.storage.dtype, &t.shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tensors read one by one (f32 straight into storage, other dtypes through bytes) equal
    /// what candle's own safetensors reader gives, for a subset asked by name too.
    #[test]
    fn safetensors_read_by_tensor_equals_candles_reader() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        tensors.insert(
            "a.f32".to_string(),
            Tensor::randn(0f32, 1., (3, 5, 7), &dev)?,
        );
        tensors.insert(
            "b.f16".to_string(),
            Tensor::randn(0f32, 1., (4, 9), &dev)?.to_dtype(DType::F16)?,
        );
        tensors.insert(
            "c.u8".to_string(),
            Tensor::arange(0u8, 11, &dev)?.reshape((11,))?,
        );
        tensors.insert(
            "d.empty".to_string(),
            Tensor::zeros((0, 3), DType::F32, &dev)?,
        );
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("w.safetensors");
        candle_core::safetensors::save(&tensors, &path)?;
        let want = candle_core::safetensors::load(&path, &dev)?;
        let file = WeightsFile::open(&path).expect("index");
        let got = file.load_all(&dev).expect("load");
        assert_eq!(got.len(), want.len());
        for (name, w) in &want {
            let g = &got[name];
            assert_eq!((g.dtype(), g.dims()), (w.dtype(), w.dims()), "{name}");
            let (g, w) = (g.to_dtype(DType::F32)?, w.to_dtype(DType::F32)?);
            let same = g.flatten_all()?.to_vec1::<f32>()? == w.flatten_all()?.to_vec1::<f32>()?;
            assert!(same, "{name}");
        }
        let some = file.load(&["c.u8"], &dev).expect("load one");
        assert_eq!(some["c.u8"].to_vec1::<u8>()?, (0..11).collect::<Vec<u8>>());
        Ok(())
    }
}
