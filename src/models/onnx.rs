//! A small reader of the ONNX protobuf: just enough of `ModelProto` to take the weights out
//! of a graph (its initializers and the names of the nodes that consume them).
//!
//! Reading the wire format by hand avoids `protoc` and a generated-code dependency. Every
//! read is bounds-checked: malformed or truncated input gives an [`OnnxError`], never a panic.
//! Tensors borrow their bytes from the input buffer, so a 100 MB model is not copied.
//!
//! Field numbers (onnx.proto3):
//! - `ModelProto`: graph = 7
//! - `GraphProto`: node = 1, initializer = 5
//! - `NodeProto`: input = 1, output = 2, name = 3, op_type = 4
//! - `TensorProto`: dims = 1, data_type = 2, float_data = 4, name = 8, raw_data = 9,
//!   data_location = 14

/// What went wrong while reading ONNX bytes. Offsets are byte offsets into the whole buffer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OnnxError {
    #[error("truncated protobuf at byte {offset}: {what} runs past the end of the data")]
    Truncated { offset: usize, what: &'static str },
    #[error("malformed protobuf at byte {offset}: varint longer than 10 bytes")]
    VarintTooLong { offset: usize },
    #[error("malformed protobuf at byte {offset}: field number 0")]
    ZeroFieldNumber { offset: usize },
    #[error("malformed protobuf at byte {offset}: unsupported wire type {wire_type}")]
    UnsupportedWireType { offset: usize, wire_type: u8 },
    #[error("malformed protobuf at byte {offset}: {field} has wire type {wire_type}, expected {expected}")]
    WrongWireType { offset: usize, field: &'static str, wire_type: u8, expected: u8 },
    #[error("malformed protobuf at byte {offset}: {field} is not valid UTF-8")]
    InvalidUtf8 { offset: usize, field: &'static str },
    #[error(
        "malformed protobuf at byte {offset}: packed {field} has a length that is not a multiple of {element_size}"
    )]
    BadPackedLength { offset: usize, field: &'static str, element_size: usize },
    #[error("the ONNX model has no graph")]
    MissingGraph,
    #[error("tensor `{name}`: {problem}")]
    TensorData { name: String, problem: String },
}

/// ONNX `TensorProto.DataType.FLOAT`.
pub const DATA_TYPE_FLOAT: i32 = 1;

/// The parts of an ONNX `GraphProto` that hold weights.
#[derive(Debug, Clone, Default)]
pub struct OnnxGraph<'a> {
    pub nodes: Vec<OnnxNode<'a>>,
    pub initializers: Vec<OnnxTensor<'a>>,
}

/// One operator of the graph; only its identity and wiring, not its attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnnxNode<'a> {
    pub name: &'a str,
    pub op_type: &'a str,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
}

/// One initializer (a constant tensor). The data stays in the input buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxTensor<'a> {
    pub name: &'a str,
    pub dims: Vec<i64>,
    pub data_type: i32,
    /// Little-endian bytes, when the exporter used `raw_data` (the usual case).
    pub raw_data: Option<&'a [u8]>,
    /// Values, when the exporter used the typed `float_data` field instead.
    pub float_data: Vec<f32>,
    /// 1 means the data lives in an external file, which this reader does not follow.
    pub data_location: i32,
}

impl<'a> OnnxGraph<'a> {
    pub fn initializer(&self, name: &str) -> Option<&OnnxTensor<'a>> {
        self.initializers.iter().find(|t| t.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&OnnxNode<'a>> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

impl OnnxTensor<'_> {
    /// The shape as unsigned sizes; negative dimensions are an error.
    pub fn shape(&self) -> Result<Vec<usize>, OnnxError> {
        self.dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| self.problem(format!("negative dimension {d}"))))
            .collect()
    }

    /// Number of elements, with overflow checked.
    pub fn element_count(&self) -> Result<usize, OnnxError> {
        self.shape()?
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.problem("element count overflows".to_string()))
    }

    /// The values of a FLOAT tensor, checked against its shape.
    pub fn to_f32(&self) -> Result<Vec<f32>, OnnxError> {
        if self.data_type != DATA_TYPE_FLOAT {
            return Err(self.problem(format!("data type {} is not FLOAT ({DATA_TYPE_FLOAT})", self.data_type)));
        }
        if self.data_location == 1 {
            return Err(self.problem("data is stored in an external file".to_string()));
        }
        let count = self.element_count()?;
        match self.raw_data {
            Some(raw) => {
                if Some(raw.len()) != count.checked_mul(4) {
                    return Err(self.problem(format!(
                        "raw_data holds {} bytes, the shape {:?} needs {} floats",
                        raw.len(),
                        self.dims,
                        count
                    )));
                }
                Ok(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            None => {
                if self.float_data.len() != count {
                    return Err(self.problem(format!(
                        "float_data holds {} values, the shape {:?} needs {}",
                        self.float_data.len(),
                        self.dims,
                        count
                    )));
                }
                Ok(self.float_data.clone())
            }
        }
    }

    fn problem(&self, problem: String) -> OnnxError {
        OnnxError::TensorData { name: self.name.to_string(), problem }
    }
}

/// Reads `ModelProto.graph`: its nodes and initializers. Other fields are skipped.
pub fn parse_model(bytes: &[u8]) -> Result<OnnxGraph<'_>, OnnxError> {
    let mut reader = Reader::new(bytes, 0);
    let mut graph = None;
    while let Some(field) = reader.next_field()? {
        if field.number == 7 {
            let (body, offset) = field.bytes("ModelProto.graph")?;
            graph = Some(parse_graph(body, offset)?);
        }
    }
    graph.ok_or(OnnxError::MissingGraph)
}

fn parse_graph(bytes: &[u8], base: usize) -> Result<OnnxGraph<'_>, OnnxError> {
    let mut reader = Reader::new(bytes, base);
    let mut graph = OnnxGraph::default();
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => {
                let (body, offset) = field.bytes("GraphProto.node")?;
                graph.nodes.push(parse_node(body, offset)?);
            }
            5 => {
                let (body, offset) = field.bytes("GraphProto.initializer")?;
                graph.initializers.push(parse_tensor(body, offset)?);
            }
            _ => {}
        }
    }
    Ok(graph)
}

fn parse_node(bytes: &[u8], base: usize) -> Result<OnnxNode<'_>, OnnxError> {
    let mut reader = Reader::new(bytes, base);
    let mut node = OnnxNode::default();
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => node.inputs.push(field.string("NodeProto.input")?),
            2 => node.outputs.push(field.string("NodeProto.output")?),
            3 => node.name = field.string("NodeProto.name")?,
            4 => node.op_type = field.string("NodeProto.op_type")?,
            _ => {}
        }
    }
    Ok(node)
}

fn parse_tensor(bytes: &[u8], base: usize) -> Result<OnnxTensor<'_>, OnnxError> {
    let mut reader = Reader::new(bytes, base);
    let mut tensor = OnnxTensor::default();
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => match field.value {
                // int64 is encoded as a two's-complement varint.
                Value::Varint(v) => tensor.dims.push(v as i64),
                Value::Bytes(packed) => {
                    let mut packed_reader = Reader::new(packed, field.offset);
                    while !packed_reader.at_end() {
                        tensor.dims.push(packed_reader.varint()? as i64);
                    }
                }
                _ => return Err(field.wrong_wire_type("TensorProto.dims", WIRE_VARINT)),
            },
            2 => tensor.data_type = field.varint("TensorProto.data_type")? as i32,
            4 => match field.value {
                Value::Fixed32(v) => tensor.float_data.push(f32::from_bits(v)),
                Value::Bytes(packed) => {
                    if packed.len() % 4 != 0 {
                        return Err(OnnxError::BadPackedLength {
                            offset: field.offset,
                            field: "TensorProto.float_data",
                            element_size: 4,
                        });
                    }
                    tensor
                        .float_data
                        .extend(packed.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                }
                _ => return Err(field.wrong_wire_type("TensorProto.float_data", WIRE_FIXED32)),
            },
            8 => tensor.name = field.string("TensorProto.name")?,
            9 => tensor.raw_data = Some(field.bytes("TensorProto.raw_data")?.0),
            14 => tensor.data_location = field.varint("TensorProto.data_location")? as i32,
            _ => {}
        }
    }
    Ok(tensor)
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

enum Value<'a> {
    Varint(u64),
    /// Skipped: no field this reader keeps is a fixed64.
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Field<'a> {
    number: u64,
    /// Offset of the field's payload in the whole buffer.
    offset: usize,
    value: Value<'a>,
}

impl<'a> Field<'a> {
    fn wire_type(&self) -> u8 {
        match self.value {
            Value::Varint(_) => WIRE_VARINT,
            Value::Fixed64 => WIRE_FIXED64,
            Value::Bytes(_) => WIRE_LEN,
            Value::Fixed32(_) => WIRE_FIXED32,
        }
    }

    fn wrong_wire_type(&self, field: &'static str, expected: u8) -> OnnxError {
        OnnxError::WrongWireType { offset: self.offset, field, wire_type: self.wire_type(), expected }
    }

    fn bytes(&self, field: &'static str) -> Result<(&'a [u8], usize), OnnxError> {
        match self.value {
            Value::Bytes(b) => Ok((b, self.offset)),
            _ => Err(self.wrong_wire_type(field, WIRE_LEN)),
        }
    }

    fn string(&self, field: &'static str) -> Result<&'a str, OnnxError> {
        let (b, offset) = self.bytes(field)?;
        std::str::from_utf8(b).map_err(|_| OnnxError::InvalidUtf8 { offset, field })
    }

    fn varint(&self, field: &'static str) -> Result<u64, OnnxError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.wrong_wire_type(field, WIRE_VARINT)),
        }
    }
}

/// A cursor over one message's bytes; `base` is where they start in the whole buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self { bytes, pos: 0, base }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let start = self.offset();
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(OnnxError::Truncated { offset: start, what: "a varint" });
            };
            self.pos += 1;
            // The 10th byte may only contribute the top bit of a u64.
            if i == 9 && byte > 1 {
                return Err(OnnxError::VarintTooLong { offset: start });
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(OnnxError::VarintTooLong { offset: start })
    }

    fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], OnnxError> {
        let start = self.offset();
        let remaining = self.bytes.len() - self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= remaining => {
                let slice = &self.bytes[self.pos..self.pos + len];
                self.pos += len;
                Ok(slice)
            }
            _ => Err(OnnxError::Truncated { offset: start, what }),
        }
    }

    fn next_field(&mut self) -> Result<Option<Field<'a>>, OnnxError> {
        if self.at_end() {
            return Ok(None);
        }
        let key_offset = self.offset();
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(OnnxError::ZeroFieldNumber { offset: key_offset });
        }
        let offset = self.offset();
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_FIXED64 => {
                self.take(8, "a fixed64 value")?;
                Value::Fixed64
            }
            WIRE_LEN => {
                let len = self.varint()?;
                let payload_offset = self.offset();
                let b = self.take(len, "a length-delimited field")?;
                return Ok(Some(Field { number, offset: payload_offset, value: Value::Bytes(b) }));
            }
            WIRE_FIXED32 => {
                let b = self.take(4, "a fixed32 value")?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            // Groups (3, 4) are deprecated and never used by ONNX; 6 and 7 are invalid.
            wire_type => {
                return Err(OnnxError::UnsupportedWireType { offset: key_offset, wire_type });
            }
        };
        Ok(Some(Field { number, offset, value }))
    }
}
