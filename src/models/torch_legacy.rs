//! A reader of legacy torch checkpoints (the format of `torch.save` before PyTorch 1.6, not a
//! zip archive), enough for a state dict of tensors.
//!
//! The file is five pickles one after another: a magic number, the protocol version, the
//! saving system's description, the object (tensors refer to their storages by persistent
//! ids), and the list of storage keys; then each storage in that order, as an 8-byte
//! little-endian element count followed by its elements, little-endian. Only the pickle
//! opcodes and the few classes a state dict uses are understood; anything else is refused,
//! never executed.

use std::collections::HashMap;

/// `torch.serialization.MAGIC_NUMBER`, the first pickle of a legacy checkpoint.
const MAGIC_NUMBER: u128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;
/// No storage of a real checkpoint comes near this; a larger count is a damaged file.
const MAX_STORAGE_BYTES: u64 = 1 << 34;

/// Why a legacy checkpoint could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TorchError {
    #[error(
        "a zip-format torch checkpoint (PyTorch 1.6 or later); whaleid reads the legacy (pre-1.6) \
         format the published weights use"
    )]
    ZipFormat,
    #[error("not a torch checkpoint (it does not start with torch's magic number)")]
    NotTorch,
    #[error("torch serialization protocol {0}, expected {PROTOCOL_VERSION}")]
    Protocol(i64),
    #[error("the file is truncated: it ends {0}")]
    Truncated(String),
    #[error("cannot read the pickle at byte {offset}: {problem}")]
    Pickle { offset: usize, problem: String },
    #[error("the checkpoint is not a state dict of tensors: {0}")]
    NotStateDict(String),
    #[error("tensor `{name}`: {problem}")]
    BadTensor { name: String, problem: String },
}

/// The element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    Float,
    Double,
    Half,
    Long,
    Int,
    Byte,
    Bool,
}

impl StorageType {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::Float,
            "DoubleStorage" => Self::Double,
            "HalfStorage" => Self::Half,
            "LongStorage" => Self::Long,
            "IntStorage" => Self::Int,
            "ByteStorage" => Self::Byte,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn element_bytes(self) -> usize {
        match self {
            Self::Double | Self::Long => 8,
            Self::Float | Self::Int => 4,
            Self::Half => 2,
            Self::Byte | Self::Bool => 1,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::Float | Self::Double | Self::Half)
    }
}

/// One tensor of the state dict: its shape, and its values widened to f32 when it is a
/// floating-point tensor (`None` for integer tensors such as BatchNorm's
/// `num_batches_tracked`).
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    pub storage_type: StorageType,
    pub shape: Vec<usize>,
    pub data: Option<Vec<f32>>,
}

/// Reads the state dict of a legacy torch checkpoint: `(name, tensor)` in the file's order.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, TorchTensor)>, TorchError> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(TorchError::ZipFormat);
    }
    let mut reader = Unpickler { bytes, pos: 0 };
    match reader.load().map_err(|e| match e {
        TorchError::Truncated(_) if bytes.len() < 16 => TorchError::NotTorch,
        e => e,
    })? {
        Value::Int(n) if n as u128 == MAGIC_NUMBER => {}
        Value::BigInt(n) if n == MAGIC_NUMBER => {}
        _ => return Err(TorchError::NotTorch),
    }
    match reader.load()? {
        Value::Int(PROTOCOL_VERSION) => {}
        Value::Int(other) => return Err(TorchError::Protocol(other)),
        _ => return Err(TorchError::NotTorch),
    }
    let system = reader.load()?;
    if let Value::Dict(entries) = &system {
        let little = entries.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == "little_endian"));
        if let Some((_, Value::Bool(false))) = little {
            return Err(TorchError::NotStateDict("saved on a big-endian machine".into()));
        }
    }
    let object = reader.load()?;
    let keys = match reader.load()? {
        Value::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                _ => Err(TorchError::NotStateDict("a storage key is not a string".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(TorchError::NotStateDict("the storage key list is missing".into())),
    };

    let Value::Dict(entries) = object else {
        return Err(TorchError::NotStateDict("the saved object is not a dict".into()));
    };
    let mut wanted: HashMap<&str, StorageType> = HashMap::new();
    for (_, value) in &entries {
        if let Value::Tensor(t) = value {
            wanted.insert(t.storage.key.as_str(), t.storage.storage_type);
        }
    }
    // Storages follow the pickles, in the order of the key list.
    let mut storages: HashMap<String, (StorageType, &[u8])> = HashMap::new();
    let mut pos = reader.pos;
    for key in &keys {
        let storage_type = *wanted
            .get(key.as_str())
            .ok_or_else(|| TorchError::NotStateDict(format!("storage `{key}` is used by no tensor")))?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| TorchError::Truncated(format!("before storage `{key}`")))?;
        let length = count.saturating_mul(storage_type.element_bytes() as u64);
        if length > MAX_STORAGE_BYTES {
            return Err(TorchError::NotStateDict(format!("storage `{key}` claims {count} elements")));
        }
        let start = pos + 8;
        let end = start + length as usize;
        let data = bytes.get(start..end).ok_or_else(|| {
            TorchError::Truncated(format!(
                "inside storage `{key}` ({} of its {length} bytes are there)",
                bytes.len().saturating_sub(start)
            ))
        })?;
        storages.insert(key.clone(), (storage_type, data));
        pos = end;
    }

    let mut out = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let Value::Str(name) = name else {
            return Err(TorchError::NotStateDict("a key is not a string".into()));
        };
        let Value::Tensor(t) = value else {
            return Err(TorchError::NotStateDict(format!("`{name}` is not a tensor")));
        };
        let Some(&(storage_type, data)) = storages.get(&t.storage.key) else {
            return Err(TorchError::BadTensor { name, problem: format!("storage `{}` is missing", t.storage.key) });
        };
        let values = match storage_type.is_float() {
            true => Some(
                gather(data, storage_type, &t)
                    .map_err(|problem| TorchError::BadTensor { name: name.clone(), problem })?,
            ),
            false => None,
        };
        out.push((name, TorchTensor { storage_type, shape: t.shape, data: values }));
    }
    Ok(out)
}

/// The tensor's elements in row-major order, read through its offset and strides.
fn gather(data: &[u8], storage_type: StorageType, t: &TensorRef) -> Result<Vec<f32>, String> {
    let width = storage_type.element_bytes();
    let elements = data.len() / width;
    if t.shape.len() != t.stride.len() {
        return Err(format!("shape {:?} and strides {:?} disagree", t.shape, t.stride));
    }
    let count: usize = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("absurd shape")?;
    if count > 0 {
        let last = t.shape.iter().zip(&t.stride).map(|(&d, &s)| (d - 1).saturating_mul(s)).sum::<usize>();
        if t.offset.saturating_add(last) >= elements {
            return Err(format!("reaches past its storage of {elements} elements"));
        }
    }
    let read = |i: usize| -> f32 {
        let b = &data[i * width..(i + 1) * width];
        match storage_type {
            StorageType::Float => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            StorageType::Double => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            _ => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
        }
    };
    let mut out = Vec::with_capacity(count);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..count {
        let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(read(at));
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < t.shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(out)
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = ((h >> 10) & 0x1f) as i32;
    let mantissa = (h & 0x3ff) as f32;
    sign * match exponent {
        0 => mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    storage_type: StorageType,
    key: String,
}

#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// What the pickles of a state dict are made of.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64 (torch's magic number).
    BigInt(u128),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
    Mark,
}

struct Unpickler<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Unpickler<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let slice = end.map(|e| &self.bytes[self.pos..e]).ok_or_else(|| {
            TorchError::Truncated(format!("inside a pickle (byte {} of {})", self.bytes.len(), self.pos + n))
        })?;
        self.pos += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, TorchError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TorchError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TorchError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, TorchError> {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| TorchError::Truncated("inside a name".into()))?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> Result<String, TorchError> {
        let offset = self.pos;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| TorchError::Pickle { offset, problem: "a string is not UTF-8".into() })
    }

    /// Runs one pickle up to its STOP and returns its value.
    fn load(&mut self) -> Result<Value, TorchError> {
        let mut stack: Vec<Value> = Vec::new();
        let mut memo: HashMap<u32, Value> = HashMap::new();
        loop {
            let offset = self.pos;
            let fail = |problem: &str| TorchError::Pickle { offset, problem: problem.to_string() };
            let opcode = self.u8()?;
            match opcode {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return stack.pop().ok_or_else(|| fail("STOP on an empty stack")),
                b'N' => stack.push(Value::None),
                0x88 => stack.push(Value::Bool(true)),
                0x89 => stack.push(Value::Bool(false)),
                b'K' => stack.push(Value::Int(self.u8()? as i64)),
                b'M' => stack.push(Value::Int(self.u16()? as i64)),
                b'J' => stack.push(Value::Int(self.u32()? as i32 as i64)),
                0x8a => {
                    let n = self.u8()? as usize;
                    let digits = self.take(n)?;
                    stack.push(little_endian_int(digits).ok_or_else(|| fail("an integer too large"))?);
                }
                b'G' => {
                    let b = self.take(8)?;
                    stack.push(Value::Float(f64::from_be_bytes(b.try_into().map_err(|_| fail("float"))?)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Str(self.text(n)?));
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    stack.push(Value::Str(self.text(n)?));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Str(self.text(n)?));
                }
                b'}' => stack.push(Value::Dict(Vec::new())),
                b']' => stack.push(Value::List(Vec::new())),
                b')' => stack.push(Value::Tuple(Vec::new())),
                b'(' => stack.push(Value::Mark),
                b't' | b'l' | b'd' => {
                    let items = pop_to_mark(&mut stack).ok_or_else(|| fail("no MARK"))?;
                    stack.push(match opcode {
                        b't' => Value::Tuple(items),
                        b'l' => Value::List(items),
                        _ => Value::Dict(pairs(items).ok_or_else(|| fail("odd number of dict items"))?),
                    });
                }
                0x85..=0x87 => {
                    let n = (opcode - 0x84) as usize;
                    if stack.len() < n {
                        return Err(fail("tuple of missing items"));
                    }
                    let items = stack.split_off(stack.len() - n);
                    stack.push(Value::Tuple(items));
                }
                b'a' => {
                    let item = stack.pop().ok_or_else(|| fail("APPEND on an empty stack"))?;
                    match stack.last_mut() {
                        Some(Value::List(list)) => list.push(item),
                        _ => return Err(fail("APPEND to something not a list")),
                    }
                }
                b'e' => {
                    let items = pop_to_mark(&mut stack).ok_or_else(|| fail("no MARK"))?;
                    match stack.last_mut() {
                        Some(Value::List(list)) => list.extend(items),
                        _ => return Err(fail("APPENDS to something not a list")),
                    }
                }
                b's' => {
                    let value = stack.pop().ok_or_else(|| fail("SETITEM on an empty stack"))?;
                    let key = stack.pop().ok_or_else(|| fail("SETITEM on an empty stack"))?;
                    match stack.last_mut() {
                        Some(Value::Dict(dict)) => dict.push((key, value)),
                        _ => return Err(fail("SETITEM on something not a dict")),
                    }
                }
                b'u' => {
                    let items = pop_to_mark(&mut stack).ok_or_else(|| fail("no MARK"))?;
                    let items = pairs(items).ok_or_else(|| fail("odd number of dict items"))?;
                    match stack.last_mut() {
                        Some(Value::Dict(dict)) => dict.extend(items),
                        _ => return Err(fail("SETITEMS on something not a dict")),
                    }
                }
                b'q' | b'r' | 0x94 => {
                    let index = match opcode {
                        b'q' => self.u8()? as u32,
                        b'r' => self.u32()?,
                        _ => memo.len() as u32,
                    };
                    let top = stack.last().ok_or_else(|| fail("PUT on an empty stack"))?;
                    memo.insert(index, top.clone());
                }
                b'h' | b'j' => {
                    let index = if opcode == b'h' { self.u8()? as u32 } else { self.u32()? };
                    stack.push(memo.get(&index).cloned().ok_or_else(|| fail("GET of an unknown memo entry"))?);
                }
                b'0' => {
                    stack.pop().ok_or_else(|| fail("POP on an empty stack"))?;
                }
                b'1' => {
                    pop_to_mark(&mut stack).ok_or_else(|| fail("no MARK"))?;
                }
                b'2' => {
                    let top = stack.last().cloned().ok_or_else(|| fail("DUP on an empty stack"))?;
                    stack.push(top);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    stack.push(Value::Global(module, name));
                }
                b'Q' => {
                    let pid = stack.pop().ok_or_else(|| fail("BINPERSID on an empty stack"))?;
                    stack.push(storage_from_pid(pid).map_err(|p| fail(&p))?);
                }
                b'R' | 0x81 => {
                    let args = stack.pop().ok_or_else(|| fail("REDUCE on an empty stack"))?;
                    let callable = stack.pop().ok_or_else(|| fail("REDUCE on an empty stack"))?;
                    stack.push(call(callable, args).map_err(|p| fail(&p))?);
                }
                b'b' => {
                    // The state of an OrderedDict (`_metadata`, module versions): not needed.
                    stack.pop().ok_or_else(|| fail("BUILD on an empty stack"))?;
                    if stack.is_empty() {
                        return Err(fail("BUILD without an object"));
                    }
                }
                other => return Err(fail(&format!("opcode 0x{other:02x} is not one a state dict uses"))),
            }
        }
    }
}

fn little_endian_int(digits: &[u8]) -> Option<Value> {
    if digits.len() > 16 {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..digits.len()].copy_from_slice(digits);
    let negative = digits.last().is_some_and(|&b| b & 0x80 != 0);
    if negative {
        buf[digits.len()..].fill(0xff);
    }
    let n = i128::from_le_bytes(buf);
    Some(match i64::try_from(n) {
        Ok(small) => Value::Int(small),
        Err(_) if n > 0 => Value::BigInt(n as u128),
        Err(_) => return None,
    })
}

fn pop_to_mark(stack: &mut Vec<Value>) -> Option<Vec<Value>> {
    let mark = stack.iter().rposition(|v| *v == Value::Mark)?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Some(items)
}

fn pairs(items: Vec<Value>) -> Option<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

/// `('storage', torch.XStorage, key, location, size, view_metadata)`.
fn storage_from_pid(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("a persistent id that is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(module, class), Value::Str(key), ..] if kind == "storage" => {
            let storage_type = (module == "torch")
                .then(|| StorageType::from_class(class))
                .flatten()
                .ok_or_else(|| format!("unknown storage type {module}.{class}"))?;
            if let Some(Value::Tuple(view)) = items.get(5)
                && !view.is_empty()
            {
                return Err("storage views are not supported".into());
            }
            Ok(Value::Storage(StorageRef { storage_type, key: key.clone() }))
        }
        _ => Err("a persistent id that is not a storage".into()),
    }
}

fn usizes(value: &Value) -> Option<Vec<usize>> {
    match value {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The classes a state dict is built from; any other is refused.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Err("a call of something that is not a class".into());
    };
    let Value::Tuple(args) = args else {
        return Err(format!("{module}.{name} called without an argument tuple"));
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => match args.as_slice() {
            [Value::Storage(storage), Value::Int(offset), shape, stride, ..] => {
                let (shape, stride) = usizes(shape).zip(usizes(stride)).ok_or("a tensor with a bad shape")?;
                let offset = usize::try_from(*offset).map_err(|_| "a tensor with a negative offset")?;
                Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
            }
            _ => Err("a tensor rebuilt from unexpected arguments".into()),
        },
        _ => Err(format!("{module}.{name} is not part of a state dict of tensors")),
    }
}

/// Writes legacy checkpoints of float tensors (tests of the reader and of what reads it).
#[doc(hidden)]
pub mod writing {
    /// A legacy checkpoint holding `tensors` (name, shape, values) as a state dict, each in
    /// its own float storage.
    pub fn legacy_checkpoint(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let mut out = Vec::new();
        // Magic number, protocol version, system info.
        out.extend([0x80, 2, 0x8a, 10]);
        out.extend(&super::MAGIC_NUMBER.to_le_bytes()[..10]);
        out.push(b'.');
        out.extend([0x80, 2, b'M']);
        out.extend(1001u16.to_le_bytes());
        out.push(b'.');
        out.extend([0x80, 2, b'}', b'(']);
        unicode(&mut out, "little_endian");
        out.extend([0x88, b'u', b'.']);
        // The state dict.
        out.extend([0x80, 2]);
        out.extend(b"ccollections\nOrderedDict\n)R(");
        for (i, (name, shape, _)) in tensors.iter().enumerate() {
            unicode(&mut out, name);
            out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            unicode(&mut out, "storage");
            out.extend(b"ctorch\nFloatStorage\n");
            unicode(&mut out, &i.to_string());
            unicode(&mut out, "cpu");
            int(&mut out, shape.iter().product::<usize>());
            out.extend(b"NtQ");
            int(&mut out, 0);
            out.push(b'(');
            for &d in shape {
                int(&mut out, d);
            }
            out.extend(b"t(");
            let mut stride = 1;
            let mut strides = Vec::new();
            for &d in shape.iter().rev() {
                strides.push(stride);
                stride *= d;
            }
            for s in strides.into_iter().rev() {
                int(&mut out, s);
            }
            out.extend(b"t\x89)tR");
        }
        out.extend(b"u.");
        // Storage keys, then storages.
        out.extend([0x80, 2, b']', b'(']);
        for i in 0..tensors.len() {
            unicode(&mut out, &i.to_string());
        }
        out.extend(b"e.");
        for (_, _, data) in tensors {
            out.extend((data.len() as u64).to_le_bytes());
            for v in data {
                out.extend(v.to_le_bytes());
            }
        }
        out
    }

    fn unicode(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn int(out: &mut Vec<u8>, n: usize) {
        out.push(b'J');
        out.extend((n as i32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::writing::legacy_checkpoint;
    use super::*;

    #[test]
    fn a_state_dict_is_read_back_with_names_shapes_and_values() {
        let bytes = legacy_checkpoint(&[
            ("conv.weight", vec![2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]),
            ("bn.bias", vec![3], vec![-1.5, 0.0, 7.25]),
        ]);
        let dict = read_state_dict(&bytes).unwrap();
        assert_eq!(dict.len(), 2);
        assert_eq!(dict[0].0, "conv.weight");
        assert_eq!(dict[0].1.shape, vec![2, 1, 2]);
        assert_eq!(dict[0].1.data.as_deref(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        assert_eq!(dict[1].1.data.as_deref(), Some(&[-1.5, 0.0, 7.25][..]));
    }

    #[test]
    fn damaged_and_foreign_files_are_refused_with_the_reason() {
        let bytes = legacy_checkpoint(&[("w", vec![4], vec![1.0; 4])]);
        for cut in [3, 40, bytes.len() - 5] {
            match read_state_dict(&bytes[..cut]) {
                Err(TorchError::Truncated(_)) | Err(TorchError::NotTorch) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(matches!(read_state_dict(&bytes[..bytes.len() - 5]), Err(TorchError::Truncated(_))));
        assert_eq!(read_state_dict(b"PK\x03\x04rest of a zip"), Err(TorchError::ZipFormat));
        assert_eq!(read_state_dict(b"\x80\x02K\x05.garbage that is long enough"), Err(TorchError::NotTorch));
    }

    #[test]
    fn strided_tensors_are_read_in_row_major_order() {
        let storage = StorageRef { storage_type: StorageType::Float, key: "0".into() };
        let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        // A transposed 2 x 3 view of a 3 x 2 storage.
        let t = TensorRef { storage, offset: 0, shape: vec![2, 3], stride: vec![1, 2] };
        assert_eq!(gather(&data, StorageType::Float, &t).unwrap(), vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        let past = TensorRef { offset: 1, ..t };
        assert!(gather(&data, StorageType::Float, &past).is_err());
    }
}
