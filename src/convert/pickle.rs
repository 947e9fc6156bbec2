//! A small pickle reader for `torch.save` checkpoints: a stack machine over the opcodes of pickle
//! protocols 0–5 that builds plain [`Value`]s and **never executes anything**. A call
//! (`REDUCE`, `NEWOBJ`) of a function or class is recorded as a [`Value::Object`] with its
//! arguments and `BUILD` state; only a few well-known callables are interpreted, by our own code:
//! torch's tensor rebuild functions, `collections.OrderedDict`, `torch.Size`, `_codecs.encode`
//! (bytes under protocol 2), `set`/`frozenset`, `copyreg._reconstructor` and numpy scalars.
//!
//! Persistent ids `('storage', torch.<Type>Storage, key, location, numel)` become
//! [`Value::Storage`] references; tensors are [`Value::Tensor`] views (storage, offset, shape,
//! stride) whose bytes are read later, from the zip records, only for the tensors that are kept.
//!
//! Refused with an error naming the byte offset: an unknown or out-of-band opcode, a truncated
//! stream, a malformed argument, and globals from modules that only an attack would reference
//! (`os.system`, `builtins.eval`, `subprocess`, …; see [`forbidden_global`]).

use std::collections::HashMap;

/// A pickled value. Containers are plain owned values (no aliasing); shared Python objects are
/// copies here, which is enough for checkpoints (a storage shared by two tensors is one
/// [`StorageRef`] either way).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64 (LONG1/LONG4 with more than 8 bytes): its little-endian two's
    /// complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A dict in insertion order (also `collections.OrderedDict`).
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// A reference to a module attribute (`GLOBAL` / `STACK_GLOBAL`), never resolved.
    Global {
        module: String,
        name: String,
    },
    /// A call of a global that we do not interpret: `class(*args)` then `BUILD state`.
    Object {
        module: String,
        name: String,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// A persistent id `('storage', torch.<Type>Storage, key, location, numel)`: the zip record
/// `data/<key>` holds `numel` elements of the storage type.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// The storage class name, e.g. `FloatStorage` (module `torch`).
    pub class: String,
    pub key: String,
    pub location: String,
    pub numel: u64,
}

/// A tensor view `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, in
/// elements of the storage's type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

impl Value {
    /// A short description for error messages (`a dict`, `an argparse.Namespace`, …).
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) | Value::BigInt(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Str(_) => "a str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "a list".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Set(_) => "a set".into(),
            Value::Global { module, name } => format!("the global {module}.{name}"),
            Value::Object { module, name, .. } => format!("a {module}.{name} object"),
            Value::Storage(s) => format!("a torch.{} without a tensor", s.class),
            Value::Tensor(_) => "a tensor".into(),
        }
    }

    /// The entries of a dict.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            _ => None,
        }
    }

    /// `dict[key]` for a str key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A pickle that cannot be read, with the byte offset of the opcode at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    pub offset: usize,
    pub reason: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pickle byte {})", self.reason, self.offset)
    }
}

/// Globals that no checkpoint references and every pickle exploit does: anything from these
/// modules, and the builtins other than plain types (`int`, `dict`, … and their Python 2 names,
/// which protocol 2 writes: `__builtin__.long`). Nothing is ever called, but such a
/// file is not a checkpoint, so we refuse it rather than skip the call silently.
pub fn forbidden_global(module: &str, name: &str) -> bool {
    const MODULES: &[&str] = &[
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "shutil",
        "socket",
        "importlib",
        "runpy",
        "pickle",
        "_pickle",
        "marshal",
        "code",
        "codeop",
        "pty",
        "ctypes",
        "multiprocessing",
        "webbrowser",
        "signal",
        "operator",
        "types",
        "inspect",
        "pdb",
        "bdb",
        "timeit",
        "io",
        "_io",
        "pathlib",
        "tempfile",
        "asyncio",
        "threading",
        "_thread",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "telnetlib",
        "cProfile",
        "profile",
        "trace",
        "doctest",
        "unittest",
        "platform",
        "sysconfig",
        "site",
        "zipimport",
        "pkgutil",
        "setuptools",
        "pip",
    ];
    const BUILTINS: &[&str] = &[
        "set",
        "frozenset",
        "list",
        "tuple",
        "dict",
        "bytearray",
        "bytes",
        "int",
        "float",
        "complex",
        "bool",
        "str",
        "slice",
        "range",
        "object",
        "type",
        "long",
        "unicode",
        "basestring",
        "xrange",
        "memoryview",
        "NoneType",
        "Ellipsis",
        "NotImplemented",
    ];
    let root = module.split('.').next().unwrap_or(module);
    if MODULES.contains(&root) {
        return true;
    }
    if module == "builtins" || module == "__builtin__" {
        return !BUILTINS.contains(&name);
    }
    // Loaders that would read or run other files.
    matches!((module, name), ("torch", "load") | ("torch.serialization", _) | ("torch.hub", _) | ("numpy", "load"))
}

const MAX_PROTOCOL: u8 = 5;

/// Deepest nesting of containers accepted (checkpoints nest a few levels); deeper is refused
/// rather than risking the stack.
pub const MAX_DEPTH: u32 = 1000;

/// Most values copied out of the memo (`GET`, `DUP`, write-backs) in one pickle. Python shares a
/// memoized object; these plain values copy it, so a small pickle that references one object
/// over and over (a "pickle bomb") would otherwise expand without bound. A 100 MB TR-DETR
/// checkpoint with its AdamW state copies about 100,000.
pub const MAX_COPIED: u64 = 10_000_000;

/// Nesting depth and number of values of a stack entry, tracked as values are built.
#[derive(Clone, Copy, Debug)]
struct Size {
    depth: u32,
    nodes: u64,
}

impl Size {
    const LEAF: Size = Size { depth: 0, nodes: 1 };

    /// A container of `items`.
    fn of<'s>(items: impl IntoIterator<Item = &'s Size>) -> Size {
        items.into_iter().fold(Size::LEAF, |acc, s| acc.add(s))
    }

    /// This container with `item` added to it.
    fn add(self, item: &Size) -> Size {
        Size { depth: self.depth.max(item.depth + 1), nodes: self.nodes.saturating_add(item.nodes) }
    }
}

struct Slot {
    value: Value,
    size: Size,
    /// The memo index this object was stored under: a mutation of the object (APPEND, SETITEM,
    /// BUILD, …) is written back there, so a later `GET` sees the finished object.
    memo: Option<u32>,
}

/// Parses a whole pickle and returns the value `STOP` leaves on the stack.
pub fn parse(bytes: &[u8]) -> Result<Value, PickleError> {
    parse_with_limit(bytes, MAX_COPIED)
}

fn parse_with_limit(bytes: &[u8], max_copied: u64) -> Result<Value, PickleError> {
    let memo = HashMap::new();
    Machine { bytes, pos: 0, op_at: 0, stack: Vec::new(), marks: Vec::new(), memo, copied: 0, max_copied }.run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    op_at: usize,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: HashMap<u32, (Value, Size)>,
    copied: u64,
    max_copied: u64,
}

impl<'a> Machine<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError { offset: self.op_at, reason: reason.into() })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => self.err(format!("truncated pickle: opcode needs {n} more bytes")),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }

    fn len64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| self.err(format!("length {n} does not fit in memory")))
    }

    /// A text argument up to the next newline (protocol 0 opcodes).
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.bytes[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("truncated pickle: missing end of line");
        };
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).or_else(|_| self.err("text argument is not UTF-8"))
    }

    fn utf8(&self, b: &[u8]) -> Result<String, PickleError> {
        String::from_utf8(b.to_vec()).or_else(|_| self.err("string is not valid UTF-8"))
    }

    /// Pushes a scalar.
    fn push(&mut self, value: Value) {
        self.stack.push(Slot { value, size: Size::LEAF, memo: None });
    }

    /// Pushes a value built from others, checking its depth.
    fn push_sized(&mut self, value: Value, size: Size) -> Result<(), PickleError> {
        if size.depth > MAX_DEPTH {
            return self.err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(Slot { value, size, memo: None });
        Ok(())
    }

    fn pop(&mut self) -> Result<Slot, PickleError> {
        match self.stack.pop() {
            Some(slot) => Ok(slot),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut Slot, PickleError> {
        if self.stack.is_empty() {
            return self.err("stack underflow");
        }
        Ok(self.stack.last_mut().unwrap())
    }

    /// The entries above the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Slot>, PickleError> {
        let Some(at) = self.marks.pop() else {
            return self.err("MARK expected but missing");
        };
        if at > self.stack.len() {
            return self.err("stack underflow below MARK");
        }
        Ok(self.stack.drain(at..).collect())
    }

    /// Counts values copied out of the memo against the limit ([`MAX_COPIED`]).
    fn copy_budget(&mut self, size: Size) -> Result<(), PickleError> {
        self.copied = self.copied.saturating_add(size.nodes);
        if self.copied > self.max_copied {
            return self.err(format!(
                "the pickle references its objects more than {} times over (a pickle bomb?)",
                self.max_copied
            ));
        }
        Ok(())
    }

    /// Adds `items` to the stack top (an object being built) with `f`, and writes the result
    /// back to its memo entry.
    fn mutate_top<T>(
        &mut self,
        items: Vec<(T, Size)>,
        f: impl FnOnce(&mut Value, Vec<T>) -> Result<(), String>,
    ) -> Result<(), PickleError> {
        let at = self.op_at;
        let slot = self.top()?;
        let mut size = slot.size;
        let mut values = Vec::with_capacity(items.len());
        for (v, s) in items {
            size = size.add(&s);
            values.push(v);
        }
        f(&mut slot.value, values).map_err(|reason| PickleError { offset: at, reason })?;
        slot.size = size;
        if size.depth > MAX_DEPTH {
            return self.err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        let slot = self.stack.last().unwrap();
        if let Some(id) = slot.memo {
            let entry = (slot.value.clone(), slot.size);
            self.memo.insert(id, entry);
            self.copy_budget(size)?;
        }
        Ok(())
    }

    fn memo_put(&mut self, id: u32) -> Result<(), PickleError> {
        let slot = self.top()?;
        slot.memo = Some(id);
        let entry = (slot.value.clone(), slot.size);
        let size = slot.size;
        self.memo.insert(id, entry);
        self.copy_budget(size)
    }

    fn memo_get(&mut self, id: u32) -> Result<(), PickleError> {
        let Some((value, size)) = self.memo.get(&id) else {
            return self.err(format!("memo entry {id} read before it was written"));
        };
        let (value, size) = (value.clone(), *size);
        self.copy_budget(size)?;
        self.stack.push(Slot { value, size, memo: Some(id) });
        Ok(())
    }

    fn global(&self, module: String, name: String) -> Result<Value, PickleError> {
        if forbidden_global(&module, &name) {
            return self.err(format!(
                "refusing the global `{module}.{name}`: no checkpoint references it (is this file a pickle exploit?)"
            ));
        }
        Ok(Value::Global { module, name })
    }

    /// `func(*args)` for REDUCE / NEWOBJ / NEWOBJ_EX.
    fn call(&mut self, func: Slot, args: Slot, kwargs: Option<Slot>, opcode: &str) -> Result<(), PickleError> {
        let Value::Tuple(mut values) = args.value else {
            return self.err(format!("{opcode} arguments are {}, not a tuple", args.value.kind()));
        };
        let mut size = Size::of([&func.size, &args.size]);
        if let Some(kw) = kwargs {
            size = size.add(&kw.size);
            if !matches!(&kw.value, Value::Dict(d) if d.is_empty()) {
                values.push(kw.value);
            }
        }
        let v = call(func.value, values).or_else(|e| self.err(e))?;
        self.push_sized(v, size)
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = match self.bytes.get(self.pos) {
                Some(&op) => op,
                None => return self.err("truncated pickle: no STOP opcode"),
            };
            self.pos += 1;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > MAX_PROTOCOL {
                        return self.err(format!("pickle protocol {p} is newer than 5"));
                    }
                }
                0x95 => {
                    // FRAME: a length prefix only
                    self.u64()?;
                }
                b'.' => return Ok(self.pop()?.value), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    let (value, size) = (top.value.clone(), top.size);
                    self.copy_budget(size)?;
                    self.push_sized(value, size)?;
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'I' => {
                    let s = self.line()?;
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(s.parse().or_else(|_| self.err(format!("bad INT `{s}`")))?),
                    };
                    self.push(v);
                }
                b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = s.parse().map(Value::Int).or_else(|_| self.err(format!("unsupported LONG `{s}`")))?;
                    self.push(v);
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    // LONG1, LONG4: little-endian two's complement
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    self.push(long_value(b));
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap())));
                }
                b'F' => {
                    let s = self.line()?;
                    let v = s.trim().parse().or_else(|_| self.err(format!("bad FLOAT `{s}`")))?;
                    self.push(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                    let n = match op {
                        b'X' => self.u32()? as usize,
                        0x8c => self.u8()? as usize,
                        _ => self.len64()?,
                    };
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(Value::Str(s));
                }
                b'V' => {
                    // UNICODE (protocol 0, raw-unicode-escape; ASCII in practice)
                    let s = self.line()?.to_string();
                    self.push(Value::Str(s));
                }
                b'T' | b'U' => {
                    // BINSTRING, SHORT_BINSTRING (Python 2 str): kept as text
                    let n = if op == b'T' { self.u32()? as usize } else { self.u8()? as usize };
                    let b = self.take(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(b).into_owned()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                0x8f => self.push(Value::Set(Vec::new())),
                b'l' | b't' | b'd' | 0x91 => {
                    // LIST, TUPLE, DICT, FROZENSET from the items above MARK
                    let items = self.pop_mark()?;
                    let size = Size::of(items.iter().map(|s| &s.size));
                    let values: Vec<Value> = items.into_iter().map(|s| s.value).collect();
                    let v = match op {
                        b'l' => Value::List(values),
                        b't' => Value::Tuple(values),
                        b'd' => Value::Dict(pairs(values).or_else(|e| self.err(e))?),
                        _ => Value::Set(values),
                    };
                    self.push_sized(v, size)?;
                }
                0x85..=0x87 => {
                    // TUPLE1..3
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    let at = self.stack.len() - n;
                    let items: Vec<Slot> = self.stack.drain(at..).collect();
                    let size = Size::of(items.iter().map(|s| &s.size));
                    self.push_sized(Value::Tuple(items.into_iter().map(|s| s.value).collect()), size)?;
                }
                b'a' | b'e' | 0x90 => {
                    // APPEND, APPENDS, ADDITEMS
                    let items = if op == b'a' { vec![self.pop()?] } else { self.pop_mark()? };
                    let items = items.into_iter().map(|s| (s.value, s.size)).collect();
                    self.mutate_top(items, |target, items| match (op, target) {
                        (0x90, Value::Set(s)) => {
                            s.extend(items);
                            Ok(())
                        }
                        (0x90, other) => Err(format!("ADDITEMS on {}", other.kind())),
                        (_, target) => append(target, items),
                    })?;
                }
                b's' | b'u' => {
                    // SETITEM, SETITEMS
                    let items = if op == b's' {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        vec![k, v]
                    } else {
                        self.pop_mark()?
                    };
                    if !items.len().is_multiple_of(2) {
                        return self.err("odd number of items for SETITEMS");
                    }
                    let items = items.into_iter().map(|s| (s.value, s.size)).collect();
                    self.mutate_top(items, |target, items| set_items(target, pairs(items)?))?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    let g = self.global(module, name)?;
                    self.push(g);
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?.value;
                    let module = self.pop()?.value;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = self.global(m, n)?;
                            self.push(g);
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' | 0x81 => {
                    // REDUCE: func(*args); NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.call(func, args, None, if op == b'R' { "REDUCE" } else { "NEWOBJ" })?;
                }
                0x92 => {
                    // NEWOBJ_EX: keyword arguments are appended as a dict
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.call(cls, args, Some(kwargs), "NEWOBJ_EX")?;
                }
                b'b' => {
                    let state = self.pop()?;
                    self.mutate_top(vec![(state.value, state.size)], |obj, mut state| {
                        build(obj, state.pop().unwrap())
                    })?;
                }
                b'p' => {
                    let s = self.line()?;
                    let id = s.parse().or_else(|_| self.err(format!("bad PUT `{s}`")))?;
                    self.memo_put(id)?;
                }
                b'q' => {
                    let id = self.u8()? as u32;
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = self.u32()?;
                    self.memo_put(id)?;
                }
                0x94 => {
                    let id = self.memo.len() as u32;
                    self.memo_put(id)?;
                }
                b'g' => {
                    let s = self.line()?;
                    let id = s.parse().or_else(|_| self.err(format!("bad GET `{s}`")))?;
                    self.memo_get(id)?;
                }
                b'h' => {
                    let id = self.u8()? as u32;
                    self.memo_get(id)?;
                }
                b'j' => {
                    let id = self.u32()?;
                    self.memo_get(id)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid.value).or_else(|e| self.err(e))?;
                    self.push_sized(v, pid.size)?;
                }
                b'P' => {
                    let s = self.line()?;
                    return self.err(format!("unsupported text persistent id `{s}` (not a torch.save checkpoint)"));
                }
                b'i' | b'o' | 0x82..=0x84 | 0x97 | 0x98 => {
                    return self.err(format!(
                        "unsupported pickle opcode {} (0x{op:02x}); torch.save never writes it",
                        opcode_name(op)
                    ));
                }
                _ => return self.err(format!("unknown pickle opcode 0x{op:02x}: not a pickle, or a corrupt one")),
            }
        }
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "?",
    }
}

fn long_value(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut buf = [fill; 8];
        buf[..b.len()].copy_from_slice(b);
        Value::Int(i64::from_le_bytes(buf))
    } else {
        Value::BigInt(b.to_vec())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn append(target: &mut Value, items: Vec<Value>) -> Result<(), String> {
    match target {
        Value::List(l) => {
            l.extend(items);
            Ok(())
        }
        // `list` subclasses reconstructed as objects keep their items as the last argument.
        Value::Object { args, .. } => {
            args.push(Value::List(items));
            Ok(())
        }
        other => Err(format!("APPEND to {}", other.kind())),
    }
}

fn set_items(target: &mut Value, items: Vec<(Value, Value)>) -> Result<(), String> {
    match target {
        Value::Dict(d) => {
            for (k, v) in items {
                match d.iter_mut().find(|(old, _)| *old == k) {
                    Some(slot) => slot.1 = v,
                    None => d.push((k, v)),
                }
            }
            Ok(())
        }
        // `dict` subclasses reconstructed as objects: their items become the state.
        Value::Object { state, .. } => {
            let mut d = match state.take().map(|b| *b) {
                Some(Value::Dict(d)) => d,
                _ => Vec::new(),
            };
            d.extend(items);
            *state = Some(Box::new(Value::Dict(d)));
            Ok(())
        }
        other => Err(format!("SETITEM on {}", other.kind())),
    }
}

/// `BUILD`: `obj.__setstate__(state)` or `obj.__dict__.update(state)`, recorded.
fn build(obj: &mut Value, state: Value) -> Result<(), String> {
    match obj {
        Value::Object { state: slot, .. } => {
            *slot = Some(Box::new(match (slot.take().map(|b| *b), state) {
                (Some(Value::Dict(mut old)), Value::Dict(new)) => {
                    old.extend(new);
                    Value::Dict(old)
                }
                (_, new) => new,
            }));
            Ok(())
        }
        // State of an OrderedDict (e.g. a state_dict's `_metadata`) and of tensors (hooks,
        // subclass attributes): not needed.
        Value::Dict(_) | Value::Tensor(_) | Value::List(_) | Value::Set(_) => Ok(()),
        other => Err(format!("BUILD on {}", other.kind())),
    }
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(*b as i64),
        other => Err(format!("{what} is {}, not an int", other.kind())),
    }
}

fn uint(v: &Value, what: &str) -> Result<u64, String> {
    let i = int(v, what)?;
    u64::try_from(i).map_err(|_| format!("{what} is negative ({i})"))
}

fn ints(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|x| uint(x, what)).collect(),
        // torch.Size reconstructed as an object
        Value::Object { module, name, args, .. } if module == "torch" && name == "Size" && args.len() == 1 => {
            ints(&args[0], what)
        }
        other => Err(format!("{what} is {}, not a tuple of ints", other.kind())),
    }
}

fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = &pid else {
        return Err(format!("unsupported persistent id: {} (not a torch.save checkpoint)", pid.kind()));
    };
    if items.first().and_then(Value::as_str) != Some("storage") || items.len() != 5 {
        return Err(format!(
            "unsupported persistent id {:?}: expected ('storage', type, key, location, numel)",
            items.first()
        ));
    }
    let class = match &items[1] {
        Value::Global { module, name } if module == "torch" || module == "torch.storage" => name.clone(),
        other => return Err(format!("storage type is {}, not a torch storage class", other.kind())),
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is {}", other.kind())),
    };
    let location = items[3].as_str().unwrap_or("?").to_string();
    let numel = uint(&items[4], "storage size")?;
    Ok(Value::Storage(StorageRef { class, key, location, numel }))
}

fn tensor(args: &[Value], what: &str) -> Result<Value, String> {
    if args.len() < 4 {
        return Err(format!("{what} with {} arguments (expected at least 4)", args.len()));
    }
    let Value::Storage(storage) = &args[0] else {
        return Err(format!("{what}: the storage is {}", args[0].kind()));
    };
    let offset = uint(&args[1], "storage offset")?;
    let shape = ints(&args[2], "tensor size")?;
    let stride = ints(&args[3], "tensor stride")?;
    if shape.len() != stride.len() {
        return Err(format!("{what}: size {shape:?} and stride {stride:?} differ in rank"));
    }
    Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
}

/// `func(*args)` for a REDUCE or NEWOBJ: interpreted for a few known callables, recorded as an
/// [`Value::Object`] otherwise. Nothing runs.
fn call(func: Value, mut args: Vec<Value>) -> Result<Value, String> {
    let (module, name) = match func {
        Value::Global { module, name } => (module, name),
        other => return Err(format!("call of {}, which is not a global", other.kind())),
    };
    let first = |args: &mut Vec<Value>| if args.is_empty() { Value::None } else { args.swap_remove(0) };
    Ok(match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => tensor(&args, &name)?,
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            match first(&mut args) {
                t @ Value::Tensor(_) => t,
                other => return Err(format!("{name} of {}", other.kind())),
            }
        }
        ("torch._tensor", "_rebuild_from_type_v2") | ("torch._tensor", "_rebuild_from_type") => {
            // (func, type, args, state): a tensor subclass; rebuild the plain tensor.
            if args.len() < 3 {
                return Err(format!("{name} with {} arguments", args.len()));
            }
            let inner = args.swap_remove(2);
            let Value::Tuple(inner) = inner else {
                return Err(format!("{name}: arguments are {}", inner.kind()));
            };
            call(args.swap_remove(0), inner)?
        }
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => match first(&mut args) {
            Value::None => Value::Dict(Vec::new()),
            Value::List(items) | Value::Tuple(items) => {
                let mut d = Vec::new();
                for item in items {
                    match item {
                        Value::Tuple(mut kv) if kv.len() == 2 => {
                            let v = kv.pop().unwrap();
                            d.push((kv.pop().unwrap(), v));
                        }
                        other => return Err(format!("OrderedDict item is {}", other.kind())),
                    }
                }
                Value::Dict(d)
            }
            d @ Value::Dict(_) => d,
            other => return Err(format!("OrderedDict of {}", other.kind())),
        },
        ("torch", "Size") | ("builtins", "tuple") | ("__builtin__", "tuple") => match first(&mut args) {
            Value::None => Value::Tuple(Vec::new()),
            Value::List(items) | Value::Tuple(items) => Value::Tuple(items),
            other => return Err(format!("{name} of {}", other.kind())),
        },
        ("builtins", "list") | ("__builtin__", "list") => match first(&mut args) {
            Value::None => Value::List(Vec::new()),
            Value::List(items) | Value::Tuple(items) => Value::List(items),
            other => return Err(format!("list of {}", other.kind())),
        },
        ("builtins", "set") | ("__builtin__", "set") | ("builtins", "frozenset") | ("__builtin__", "frozenset") => {
            match first(&mut args) {
                Value::None => Value::Set(Vec::new()),
                Value::List(items) | Value::Tuple(items) | Value::Set(items) => Value::Set(items),
                other => return Err(format!("{name} of {}", other.kind())),
            }
        }
        ("_codecs", "encode") => match first(&mut args) {
            // bytes under protocol 2: _codecs.encode(text, 'latin1')
            Value::Str(s) => Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()),
            other => return Err(format!("_codecs.encode of {}", other.kind())),
        },
        ("builtins", "bytearray") | ("__builtin__", "bytearray") | ("builtins", "bytes") => match first(&mut args) {
            Value::None => Value::Bytes(Vec::new()),
            b @ Value::Bytes(_) => b,
            Value::Str(s) => Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()),
            other => return Err(format!("{name} of {}", other.kind())),
        },
        ("copyreg", "_reconstructor") | ("copy_reg", "_reconstructor") => {
            // (cls, base, state): an object of cls
            match first(&mut args) {
                Value::Global { module, name } => Value::Object { module, name, args: Vec::new(), state: None },
                other => return Err(format!("_reconstructor of {}", other.kind())),
            }
        }
        ("numpy.core.multiarray", "scalar") | ("numpy._core.multiarray", "scalar") => numpy_scalar(&args)
            .unwrap_or(Value::Object { module: module.clone(), name: name.clone(), args, state: None }),
        _ => Value::Object { module, name, args, state: None },
    })
}

/// `numpy.core.multiarray.scalar(dtype, bytes)` for the plain little-endian number types
/// (`numpy.float64(0.1)` in an options namespace). Other dtypes stay objects.
fn numpy_scalar(args: &[Value]) -> Option<Value> {
    let (Value::Object { module, name, args: dargs, state }, Value::Bytes(b)) = (args.first()?, args.get(1)?) else {
        return None;
    };
    if !module.starts_with("numpy") || name != "dtype" {
        return None;
    }
    let code = dargs.first()?.as_str()?;
    // state = (version, byteorder, ...): '<' or '|' are fine, '>' is not.
    if let Some(Value::Tuple(s)) = state.as_deref() {
        if s.get(1).and_then(Value::as_str) == Some(">") {
            return None;
        }
    }
    let arr = |n: usize| -> Option<&[u8]> { (b.len() == n).then_some(b.as_slice()) };
    Some(match code {
        "f8" => Value::Float(f64::from_le_bytes(arr(8)?.try_into().ok()?)),
        "f4" => Value::Float(f32::from_le_bytes(arr(4)?.try_into().ok()?) as f64),
        "i8" => Value::Int(i64::from_le_bytes(arr(8)?.try_into().ok()?)),
        "i4" => Value::Int(i32::from_le_bytes(arr(4)?.try_into().ok()?) as i64),
        "u4" => Value::Int(u32::from_le_bytes(arr(4)?.try_into().ok()?) as i64),
        "b1" => Value::Bool(arr(1)?[0] != 0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values() {
        // pickle.dumps({'a': [1, -2, 3.5, True, None, 'é'], 'b': (300, 70000)}, protocol=2)
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x88NX\x02\x00\x00\x00\xc3\xa9q\x03eX\x01\x00\x00\x00bq\x04M,\x01Jp\x11\x01\x00\x86q\x05u.";
        let v = parse(bytes).unwrap();
        assert_eq!(
            v.get("a").unwrap(),
            &Value::List(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Float(3.5),
                Value::Bool(true),
                Value::None,
                Value::Str("é".into())
            ])
        );
        assert_eq!(v.get("b").unwrap(), &Value::Tuple(vec![Value::Int(300), Value::Int(70000)]));
    }

    #[test]
    fn memo_sees_the_finished_object() {
        // l = [1]; pickle.dumps([l, l], protocol=2) builds l, memoizes it, then appends to it.
        let bytes = b"\x80\x02]q\x00(]q\x01K\x01ah\x01e.";
        let v = parse(bytes).unwrap();
        let one = Value::List(vec![Value::Int(1)]);
        assert_eq!(v, Value::List(vec![one.clone(), one]));
    }

    #[test]
    fn long_and_errors() {
        assert_eq!(long_value(&[0xff]), Value::Int(-1));
        assert_eq!(long_value(&[0x00, 0x01]), Value::Int(256));
        let e = parse(b"\x80\x02\xff.").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.reason.contains("unknown pickle opcode 0xff"), "{e}");
        let e = parse(b"\x80\x02cos\nsystem\nq\x00.").unwrap_err();
        assert!(e.reason.contains("os.system"), "{e}");
        let e = parse(b"\x80\x02X\x10\x00\x00\x00ab").unwrap_err();
        assert!(e.reason.contains("truncated"), "{e}");
        assert!(parse(b"\x80\x02K\x01").unwrap_err().reason.contains("no STOP"));
    }

    #[test]
    fn bombs_and_deep_nesting_are_refused() {
        // l = []; then 100 times l = [l, l]: 2^100 values once copied, from 800 bytes.
        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for _ in 0..100 {
            bomb.extend_from_slice(b"(h\x00h\x00lq\x00");
        }
        bomb.push(b'.');
        assert!(parse_with_limit(&bomb, 100_000).unwrap_err().reason.contains("pickle bomb"));
        // 2000 nested lists
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b']', 2000));
        deep.extend(std::iter::repeat_n(b'a', 1999));
        deep.push(b'.');
        assert!(parse(&deep).unwrap_err().reason.contains("deeper than 1000"));
        // 900 levels are fine
        let mut ok = b"\x80\x02".to_vec();
        ok.extend(std::iter::repeat_n(b']', 900));
        ok.extend(std::iter::repeat_n(b'a', 899));
        ok.push(b'.');
        assert!(parse(&ok).is_ok());
    }
}
