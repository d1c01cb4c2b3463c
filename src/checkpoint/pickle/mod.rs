//! A restricted unpickler for PyTorch zip checkpoints (`torch.save` since 1.6: `.ckpt`, `.pth`).
//!
//! Nothing in the pickle is ever executed. `GLOBAL` only names a `(module, name)` pair; calling
//! one (`REDUCE`, `NEWOBJ`) gives an opaque [`Value::Call`] that records the call and runs nothing.
//! Only these calls are interpreted, by the code below, never by looking the name up:
//! `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` (tensor over a storage persistent id),
//! `torch._utils._rebuild_parameter*` and `torch._tensor._rebuild_from_type_v2` (unwrap to the
//! tensor), `collections.OrderedDict` (a dict). `BUILD` (`__setstate__`) is ignored: the
//! state_dict's `_metadata` attribute is not needed.
//!
//! Why not `candle_core::pickle` (`PthTensors`, `read_all_with_key`): on the authors' files it
//! drops every `IntStorage` tensor with only a "skipping" line on stderr (`model_ema.num_updates`:
//! it reads 422 of the LDM ckpt's 423 tensors and 995 of the .pth's 997), it maps the `DICT` opcode to `EMPTY_DICT`, its memo deep-copies objects on every `BINGET`
//! (a crafted pickle can grow memory exponentially), it folds the `_metadata` state into the state
//! dict as an extra entry, and it re-opens the zip archive for every tensor. Shared storages,
//! 0-dim tensors and class objects as dict keys are handled here explicitly.
mod machine;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use candle_core::DType;

/// A pickled value. Containers are reference-counted so that the memo shares them (as Python's does).
#[derive(Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (never needed for weights).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A class or function named by `GLOBAL` / `STACK_GLOBAL`; an opaque, comparable value.
    Global(Rc<(String, String)>),
    /// A call of something that is not interpreted: recorded, never executed.
    Call(Rc<(Value, Value)>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

/// A storage record `data/<key>` of the archive, as named by a persistent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    /// Number of elements.
    pub numel: usize,
}

/// A tensor: a strided view on a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// In elements.
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// One past the largest storage element the view touches (0 for an empty tensor).
    pub fn extent(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.offset
            + 1
            + self
                .shape
                .iter()
                .zip(&self.stride)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
    }
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::BigInt => "<big int>".into(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Bytes(b) => format!("<{} bytes>", b.len()),
            Value::Tuple(t) => format!("<tuple of {}>", t.len()),
            Value::List(l) => format!("<list of {}>", l.borrow().len()),
            Value::Dict(d) => format!("<dict of {}>", d.borrow().len()),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Call(c) => format!("<call of {} (not executed)>", c.0.describe()),
            Value::Storage(s) => format!("<storage {}>", s.key),
            Value::Tensor(t) => format!("<tensor {:?}>", t.shape),
        }
    }

    /// Equality for dict-key lookup (strings and ints are what matters).
    fn key_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Global(a), Value::Global(b)) => a == b,
            _ => false,
        }
    }

    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }

    fn as_usizes(&self) -> Option<Vec<usize>> {
        match self {
            Value::Tuple(t) => t.iter().map(Value::as_usize).collect(),
            Value::List(l) => l.borrow().iter().map(Value::as_usize).collect(),
            _ => None,
        }
    }

    /// Looks `key` up in a dict value.
    pub fn dict_get(&self, key: &str) -> Option<Value> {
        let Value::Dict(d) = self else { return None };
        let k = Value::Str(key.into());
        d.borrow()
            .iter()
            .find(|(kk, _)| kk.key_eq(&k))
            .map(|(_, v)| v.clone())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shallow on purpose: a crafted pickle can build cyclic containers.
        f.write_str(&self.describe())
    }
}

/// Unpickles `data` without executing anything (see the module docs).
pub fn unpickle(data: &[u8]) -> Result<Value, String> {
    machine::Machine::new(data).run()
}

/// What a state dict holds: its tensors in stored order, and the entries that are not tensors.
pub struct StateDictRefs {
    pub tensors: Vec<(String, TensorRef)>,
    pub non_tensors: Vec<String>,
}

/// Takes `["state_dict"]` of the top-level object (or the top-level dict itself when it is a bare
/// state dict, as `torch.save(model.state_dict())` writes).
pub fn state_dict(top: &Value) -> Result<StateDictRefs, String> {
    let Value::Dict(entries) = top else {
        return Err(format!("the pickled object is {top:?}, not a dict"));
    };
    let sd = match top.dict_get("state_dict") {
        Some(sd @ Value::Dict(_)) => sd,
        Some(other) => return Err(format!("[\"state_dict\"] is {other:?}, not a dict")),
        None => {
            let has_tensors = entries
                .borrow()
                .iter()
                .any(|(_, v)| matches!(v, Value::Tensor(_)));
            if !has_tensors {
                let keys: Vec<String> = entries
                    .borrow()
                    .iter()
                    .take(12)
                    .map(|(k, _)| k.describe())
                    .collect();
                return Err(format!(
                    "no \"state_dict\" entry and no tensors at the top level (keys: {})",
                    keys.join(", ")
                ));
            }
            top.clone()
        }
    };
    let Value::Dict(sd) = sd else { unreachable!() };
    let mut out = StateDictRefs {
        tensors: Vec::new(),
        non_tensors: Vec::new(),
    };
    for (k, v) in sd.borrow().iter() {
        let Value::Str(name) = k else {
            out.non_tensors.push(k.describe());
            continue;
        };
        match v {
            Value::Tensor(t) => out.tensors.push((name.to_string(), (**t).clone())),
            _ => out.non_tensors.push(name.to_string()),
        }
    }
    Ok(out)
}
