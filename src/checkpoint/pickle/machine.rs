//! The pickle virtual machine: the opcodes of protocol 2 that `torch.save` writes, on a stack,
//! with a memo that shares containers. Calls are recorded, never executed (see the module docs).
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use candle_core::DType;

use super::{StorageRef, TensorRef, Value};

/// The storage class named in a persistent id gives the dtype.
fn storage_dtype(module: &str, name: &str) -> Result<DType, String> {
    if module != "torch" {
        return Err(format!("unknown storage type {module}.{name}"));
    }
    Ok(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" | "UntypedStorage" => DType::U8,
        other => return Err(format!("unsupported storage type torch.{other}")),
    })
}

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

type R<T> = Result<T, String>;

impl<'a> Machine<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return Err(format!(
                "unexpected end of the pickle at byte {} (wanted {n} more bytes)",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn i32(&mut self) -> R<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated text argument")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "text argument is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn len_arg(&mut self, n: u64) -> R<usize> {
        // Bound every length by what is left, so a crafted length cannot allocate gigabytes.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| {
                format!(
                    "length {n} at byte {} runs past the end of the pickle",
                    self.pos
                )
            })
    }

    fn pop(&mut self) -> R<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at byte {}", self.pos));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self) -> R<&Value> {
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let m = self.marks.pop().ok_or("MARK missing")?;
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u64) -> R<()> {
        let v = self
            .stack
            .last()
            .ok_or("memoizing from an empty stack")?
            .clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> R<()> {
        let v = self
            .memo
            .get(&idx)
            .ok_or_else(|| format!("memo entry {idx} missing"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> R<()> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of items for SETITEMS".into());
        }
        let d = match self.stack.last() {
            Some(Value::Dict(d)) => d.clone(),
            other => return Err(format!("SETITEM(S) on a non-dict ({other:?})")),
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.borrow_mut().push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> R<()> {
        match self.stack.last() {
            Some(Value::List(l)) => l.borrow_mut().extend(items),
            other => return Err(format!("APPEND(S) on a non-list ({other:?})")),
        }
        Ok(())
    }

    /// `REDUCE`: interpret the few allowed constructors; anything else becomes an opaque call.
    fn reduce(&self, func: Value, args: Value) -> R<Value> {
        let Value::Global(g) = &func else {
            return Ok(Value::Call(Rc::new((func, args))));
        };
        let args_t: &[Value] = match &args {
            Value::Tuple(t) => t,
            _ => &[],
        };
        match (g.0.as_str(), g.1.as_str()) {
            ("collections", "OrderedDict") => {
                let mut items = Vec::new();
                if let Some(Value::List(l)) = args_t.first() {
                    for pair in l.borrow().iter() {
                        match pair {
                            Value::Tuple(p) if p.len() == 2 => {
                                items.push((p[0].clone(), p[1].clone()))
                            }
                            _ => {
                                return Err(
                                    "OrderedDict built from something that is not pairs".into()
                                )
                            }
                        }
                    }
                }
                Ok(Value::Dict(Rc::new(RefCell::new(items))))
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                rebuild_tensor(args_t).map(|t| Value::Tensor(Rc::new(t)))
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => match args_t.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(format!("{}.{} without a tensor", g.0, g.1)),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => match args_t {
                [inner, _ty, inner_args, ..] => self.reduce(inner.clone(), inner_args.clone()),
                _ => Err("malformed _rebuild_from_type_v2".into()),
            },
            _ => Ok(Value::Call(Rc::new((func, args)))),
        }
    }

    fn persistent_load(&self, pid: Value) -> R<Value> {
        let bad = || format!("unsupported persistent id {pid:?}");
        let Value::Tuple(t) = &pid else {
            return Err(bad());
        };
        match &t[..] {
            [Value::Str(tag), Value::Global(ty), Value::Str(key), _location, numel]
                if &**tag == "storage" =>
            {
                let dtype = storage_dtype(&ty.0, &ty.1)?;
                let numel = numel.as_usize().ok_or_else(bad)?;
                // The location ('cuda:0' in GPU-trained files) is ignored: everything loads on the host.
                Ok(Value::Storage(Rc::new(StorageRef {
                    key: key.to_string(),
                    dtype,
                    numel,
                })))
            }
            _ => Err(bad()),
        }
    }

    pub(super) fn run(mut self) -> R<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.stack.last().ok_or("DUP on an empty stack")?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.i32()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let n = self.len_arg(n)?;
                    let bytes = self.take(n)?;
                    let v = if n <= 8 {
                        let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                            [0xff; 8]
                        } else {
                            [0; 8]
                        };
                        buf[..n].copy_from_slice(bytes);
                        Value::Int(i64::from_le_bytes(buf))
                    } else {
                        Value::BigInt
                    };
                    self.stack.push(v)
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v))
                }
                b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                    let n = match op {
                        b'X' => self.u32()? as u64,
                        0x8c | b'U' => self.u8()? as u64,
                        0x8d => self.u64()?,
                        _ => self.i32()?.max(0) as u64,
                    };
                    let n = self.len_arg(n)?;
                    let bytes = self.take(n)?;
                    let s = if op == b'T' || op == b'U' {
                        // Python 2 byte strings: Python 3 decodes them as ASCII/latin-1 text.
                        String::from_utf8_lossy(bytes).into_owned()
                    } else {
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| format!("invalid UTF-8 string at byte {at}"))?
                    };
                    self.stack.push(Value::Str(s.into()))
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.u32()? as u64,
                        b'C' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_arg(n)?;
                    let bytes = self.take(n)?;
                    self.stack.push(Value::Bytes(bytes.into()))
                }
                b')' => self.stack.push(Value::Tuple(Rc::new([]))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items.into()))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(items.into()))
                }
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))))
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                // Sets are kept as lists: nothing here needs set semantics.
                0x8f => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items.into()))
                }
                b'}' => self
                    .stack
                    .push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack
                        .push(Value::Dict(Rc::new(RefCell::new(Vec::new()))));
                    self.set_items(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack.push(Value::Global(Rc::new((module, name))))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self
                            .stack
                            .push(Value::Global(Rc::new((m.to_string(), n.to_string())))),
                        _ => {
                            return Err(format!("STACK_GLOBAL with non-string names at byte {at}"))
                        }
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self
                        .reduce(func, args)
                        .map_err(|e| format!("{e} (at byte {at})"))?;
                    self.stack.push(v)
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Call(Rc::new((cls, args))))
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Call(Rc::new((cls, args))))
                }
                b'b' => {
                    // BUILD would call __setstate__ / update __dict__: never done here.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self
                        .persistent_load(pid)
                        .map_err(|e| format!("{e} (at byte {at})"))?;
                    self.stack.push(v)
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    self.memo_get(i)?
                }
                b'g' => {
                    let i = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                    self.memo_get(i)?
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?
                }
                b'p' => {
                    let i = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at}"
                    ));
                }
            }
        }
    }
}

fn rebuild_tensor(args: &[Value]) -> R<TensorRef> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(format!("_rebuild_tensor with {} arguments", args.len()));
    };
    let Value::Storage(storage) = storage else {
        return Err(format!(
            "_rebuild_tensor on {storage:?} instead of a storage"
        ));
    };
    let offset = offset.as_usize().ok_or("bad storage offset")?;
    let shape = size.as_usizes().ok_or("bad tensor size")?;
    let stride = stride.as_usizes().ok_or("bad tensor stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    let t = TensorRef {
        storage: (**storage).clone(),
        offset,
        shape,
        stride,
    };
    if t.extent() > t.storage.numel {
        return Err(format!(
            "tensor {:?} at offset {} runs past its storage {} of {} elements",
            t.shape, t.offset, t.storage.key, t.storage.numel
        ));
    }
    Ok(t)
}
