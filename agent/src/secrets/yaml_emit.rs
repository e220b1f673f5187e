//! YAML output identical to sops' (go-yaml v3 encoder, indent 4).
//!
//! The tree is converted to the nodes sops builds (`appendTreeBranch`),
//! then to go-yaml's event stream (`encoder.node`), which drives a port of
//! go-yaml's emitter state machine (`emitterc.go`), restricted to what
//! sops can produce.

use base64::Engine;
use zeroize::Zeroizing;

use super::tree::{Entry, Value};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

#[derive(Default)]
struct Comments {
    head: Vec<u8>,
    line: Vec<u8>,
    foot: Vec<u8>,
    tail: Vec<u8>,
}

enum Ev {
    StreamStart,
    StreamEnd,
    DocStart,
    DocEnd,
    MapStart(Comments),
    MapEnd(Comments),
    SeqStart(Comments),
    SeqEnd(Comments),
    Scalar {
        value: Zeroizing<Vec<u8>>,
        binary_tag: bool,
        style: Style,
        c: Comments,
    },
}

impl Ev {
    fn comments(&self) -> Option<&Comments> {
        match self {
            Ev::MapStart(c) | Ev::MapEnd(c) | Ev::SeqStart(c) | Ev::SeqEnd(c) => Some(c),
            Ev::Scalar { c, .. } => Some(c),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Tree -> nodes (sops' stores/yaml appendTreeBranch / appendSequence)

enum NodeKind {
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Scalar {
        value: Zeroizing<Vec<u8>>,
        binary_tag: bool,
        style: Style,
    },
}

struct Node {
    kind: NodeKind,
    head: Vec<u8>,
    foot: Vec<u8>,
}

fn comment_block(comments: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comments.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.push(b'#');
        out.extend_from_slice(c);
    }
    out
}

fn add_head(node: &mut Node, comments: &mut Vec<&[u8]>) {
    if comments.is_empty() {
        return;
    }
    let mut c = comment_block(comments);
    if !node.head.is_empty() {
        c.push(b'\n');
        c.extend_from_slice(&node.head);
    }
    node.head = c;
    comments.clear();
}

fn add_foot(node: &mut Node, comments: &mut Vec<&[u8]>) {
    if comments.is_empty() {
        return;
    }
    let c = comment_block(comments);
    if !node.foot.is_empty() {
        node.foot.push(b'\n');
    }
    node.foot.extend_from_slice(&c);
    comments.clear();
}

fn scalar_node(value: Vec<u8>, binary_tag: bool, style: Style) -> Node {
    Node {
        kind: NodeKind::Scalar {
            value: Zeroizing::new(value),
            binary_tag,
            style,
        },
        head: Vec::new(),
        foot: Vec::new(),
    }
}

/// go-yaml's `encodeBase64` (70-column lines, each followed by `\n` when there are several).
fn encode_base64_lines(data: &[u8]) -> Vec<u8> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let lines = enc.len() / 70 + 1;
    let mut out = Vec::with_capacity(enc.len() + lines);
    for chunk in enc.as_bytes().chunks(70) {
        out.extend_from_slice(chunk);
        if lines > 1 {
            out.push(b'\n');
        }
    }
    out
}

/// Node for a Go string, as `yaml.Node.Encode(string)` builds it.
fn string_node(s: &[u8]) -> Node {
    match std::str::from_utf8(s) {
        Err(_) => {
            let b64 = encode_base64_lines(s);
            let style = if b64.contains(&b'\n') {
                Style::Literal
            } else {
                Style::Plain
            };
            scalar_node(b64, true, style)
        }
        Ok(text) => {
            let style = if text.contains('\n') {
                Style::Literal
            } else if super::yaml_parse::plain_resolves_to_str(text) && !is_base60_float(text) && !is_old_bool(text) {
                Style::Plain
            } else {
                Style::Double
            };
            scalar_node(s.to_vec(), false, style)
        }
    }
}

fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF"
    )
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&c) = b.first() else { return false };
    if !(c == b'+' || c == b'-' || c.is_ascii_digit()) || !s.contains(':') {
        return false;
    }
    let mut i = usize::from(c == b'+' || c == b'-');
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    i += 1;
    while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) && i - start < 2 {
            i += 1;
        }
        let digits = &b[start..i];
        let ok = match digits.len() {
            1 => true,
            2 => digits[0] <= b'5',
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

fn value_node(v: &Value) -> Node {
    match v {
        Value::Map(entries) => map_node(entries),
        Value::Seq(items) => seq_node(items),
        Value::Null => scalar_node(b"null".to_vec(), false, Style::Plain),
        Value::Str(s) => string_node(s),
        Value::Time(s) => scalar_node(s.to_vec(), false, Style::Plain),
        Value::Int(i) => scalar_node(i.to_string().into_bytes(), false, Style::Plain),
        Value::Bool(b) => scalar_node(
            if *b { b"true".to_vec() } else { b"false".to_vec() },
            false,
            Style::Plain,
        ),
        Value::Float(f) => {
            let mut out = Vec::new();
            super::gofmt::format_float_g(*f, &mut out);
            let out = match out.as_slice() {
                b"+Inf" => b".inf".to_vec(),
                b"-Inf" => b"-.inf".to_vec(),
                b"NaN" => b".nan".to_vec(),
                _ => out,
            };
            scalar_node(out, false, Style::Plain)
        }
        // go-yaml marshals []byte as a sequence of integers.
        Value::Bytes(b) => Node {
            kind: NodeKind::Seq(
                b.iter()
                    .map(|x| scalar_node(x.to_string().into_bytes(), false, Style::Plain))
                    .collect(),
            ),
            head: Vec::new(),
            foot: Vec::new(),
        },
        // A comment in value position is a Go struct {Value string}.
        Value::Comment(c) => Node {
            kind: NodeKind::Map(vec![(string_node(b"value"), string_node(c))]),
            head: Vec::new(),
            foot: Vec::new(),
        },
    }
}

fn map_node(entries: &[Entry]) -> Node {
    let mut node = Node {
        kind: NodeKind::Map(Vec::new()),
        head: Vec::new(),
        foot: Vec::new(),
    };
    let mut pairs: Vec<(Node, Node)> = Vec::new();
    let mut comments: Vec<&[u8]> = Vec::new();
    let mut beginning = true;
    for e in entries {
        match e {
            Entry::Comment(c) => comments.push(c.as_slice()),
            Entry::Pair(k, v) => {
                if beginning {
                    add_head(&mut node, &mut comments);
                    beginning = false;
                }
                let mut key = string_node(k.as_bytes());
                add_head(&mut key, &mut comments);
                pairs.push((key, value_node(v)));
            }
        }
    }
    if !comments.is_empty() {
        if beginning {
            add_head(&mut node, &mut comments);
        } else if let Some((k, _)) = pairs.last_mut() {
            add_foot(k, &mut comments);
        }
    }
    node.kind = NodeKind::Map(pairs);
    node
}

fn seq_node(items: &[Value]) -> Node {
    let mut node = Node {
        kind: NodeKind::Seq(Vec::new()),
        head: Vec::new(),
        foot: Vec::new(),
    };
    let mut out: Vec<Node> = Vec::new();
    let mut comments: Vec<&[u8]> = Vec::new();
    let mut beginning = true;
    for v in items {
        if let Value::Comment(c) = v {
            comments.push(c.as_slice());
            continue;
        }
        if beginning {
            add_head(&mut node, &mut comments);
            beginning = false;
        }
        let mut n = value_node(v);
        add_head(&mut n, &mut comments);
        out.push(n);
    }
    if !comments.is_empty() {
        if beginning {
            add_head(&mut node, &mut comments);
        } else if let Some(last) = out.last_mut() {
            add_foot(last, &mut comments);
        }
    }
    node.kind = NodeKind::Seq(out);
    node
}

// ---------------------------------------------------------------------------
// Nodes -> events (go-yaml encoder.node)

fn node_events(node: Node, tail: Vec<u8>, evs: &mut Vec<Ev>) {
    match node.kind {
        NodeKind::Map(pairs) => {
            evs.push(Ev::MapStart(Comments {
                head: node.head,
                tail,
                ..Comments::default()
            }));
            let mut tail: Vec<u8> = Vec::new();
            for (mut k, v) in pairs {
                let foot = std::mem::take(&mut k.foot);
                node_events(k, std::mem::take(&mut tail), evs);
                tail = foot;
                node_events(v, Vec::new(), evs);
            }
            evs.push(Ev::MapEnd(Comments {
                tail,
                foot: node.foot,
                ..Comments::default()
            }));
        }
        NodeKind::Seq(items) => {
            evs.push(Ev::SeqStart(Comments {
                head: node.head,
                ..Comments::default()
            }));
            for item in items {
                node_events(item, Vec::new(), evs);
            }
            evs.push(Ev::SeqEnd(Comments {
                foot: node.foot,
                ..Comments::default()
            }));
        }
        NodeKind::Scalar {
            value,
            binary_tag,
            style,
        } => evs.push(Ev::Scalar {
            value,
            binary_tag,
            style,
            c: Comments {
                head: node.head,
                foot: node.foot,
                tail,
                ..Comments::default()
            },
        }),
    }
}

// ---------------------------------------------------------------------------
// Emitter (port of go-yaml emitterc.go)

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    StreamStart,
    FirstDocumentStart,
    DocumentStart,
    DocumentContent,
    DocumentEnd,
    FlowSequenceFirstItem,
    FlowSequenceItem,
    FlowMappingFirstKey,
    FlowMappingKey,
    BlockSequenceFirstItem,
    BlockSequenceItem,
    BlockMappingFirstKey,
    BlockMappingKey,
    BlockMappingSimpleValue,
    BlockMappingValue,
    End,
}

#[derive(Default)]
struct Analysis {
    multiline: bool,
    flow_plain_allowed: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

struct Emitter<'e> {
    out: Zeroizing<Vec<u8>>,
    best_indent: i64,
    best_width: i64,
    state: State,
    states: Vec<State>,
    evs: &'e [Ev],
    pos: usize,
    indents: Vec<i64>,
    indent: i64,
    flow_level: i64,
    root_context: bool,
    simple_key_context: bool,
    column: i64,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
    foot_indent: i64,
    head_comment: Vec<u8>,
    line_comment: Vec<u8>,
    foot_comment: Vec<u8>,
    tail_comment: Vec<u8>,
    key_line_comment: Vec<u8>,
    tag_binary: bool,
    scalar: Analysis,
    style: Style,
}

fn width(b: u8) -> usize {
    if b & 0x80 == 0 {
        1
    } else if b & 0xE0 == 0xC0 {
        2
    } else if b & 0xF0 == 0xE0 {
        3
    } else if b & 0xF8 == 0xF0 {
        4
    } else {
        1
    }
}

fn is_space(s: &[u8], i: usize) -> bool {
    s.get(i) == Some(&b' ')
}
fn is_tab(s: &[u8], i: usize) -> bool {
    s.get(i) == Some(&b'\t')
}
fn is_blank(s: &[u8], i: usize) -> bool {
    is_space(s, i) || is_tab(s, i)
}
fn is_break(s: &[u8], i: usize) -> bool {
    match s.get(i) {
        Some(b'\r') | Some(b'\n') => true,
        Some(0xC2) => s.get(i + 1) == Some(&0x85),
        Some(0xE2) => s.get(i + 1) == Some(&0x80) && matches!(s.get(i + 2), Some(0xA8) | Some(0xA9)),
        _ => false,
    }
}
fn is_blankz(s: &[u8], i: usize) -> bool {
    is_blank(s, i) || is_break(s, i) || s.get(i).is_none_or(|c| *c == 0)
}
fn is_bom(s: &[u8], i: usize) -> bool {
    s.get(i) == Some(&0xEF) && s.get(i + 1) == Some(&0xBB) && s.get(i + 2) == Some(&0xBF)
}
fn is_printable(s: &[u8], i: usize) -> bool {
    let c = s[i];
    let c1 = s.get(i + 1).copied().unwrap_or(0);
    let c2 = s.get(i + 2).copied().unwrap_or(0);
    (c == 0x0A)
        || (0x20..=0x7E).contains(&c)
        || (c == 0xC2 && c1 >= 0xA0)
        || (c > 0xC2 && c < 0xED)
        || (c == 0xED && c1 < 0xA0)
        || (c == 0xEE)
        || (c == 0xEF && !(c1 == 0xBB && c2 == 0xBF) && !(c1 == 0xBF && (c2 == 0xBE || c2 == 0xBF)))
}

impl<'e> Emitter<'e> {
    fn new(evs: &'e [Ev]) -> Self {
        Emitter {
            out: Zeroizing::new(Vec::new()),
            best_indent: 4,
            best_width: -1,
            state: State::StreamStart,
            states: Vec::new(),
            evs,
            pos: 0,
            indents: Vec::new(),
            indent: -1,
            flow_level: 0,
            root_context: false,
            simple_key_context: false,
            column: 0,
            whitespace: true,
            indention: true,
            open_ended: false,
            foot_indent: -1,
            head_comment: Vec::new(),
            line_comment: Vec::new(),
            foot_comment: Vec::new(),
            tail_comment: Vec::new(),
            key_line_comment: Vec::new(),
            tag_binary: false,
            scalar: Analysis::default(),
            style: Style::Plain,
        }
    }

    fn put(&mut self, b: u8) {
        self.out.push(b);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push(b'\n');
        self.column = 0;
        self.indention = true;
    }

    fn write(&mut self, s: &[u8], i: &mut usize) {
        let w = width(s[*i]).min(s.len() - *i);
        self.out.extend_from_slice(&s[*i..*i + w]);
        self.column += 1;
        *i += w;
    }

    fn write_all(&mut self, s: &[u8]) {
        let mut i = 0;
        while i < s.len() {
            self.write(s, &mut i);
        }
    }

    fn write_break(&mut self, s: &[u8], i: &mut usize) {
        if s[*i] == b'\n' {
            self.put_break();
            *i += 1;
        } else {
            self.write(s, i);
            self.column = 0;
            self.indention = true;
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn pop_state(&mut self) {
        self.state = self.states.pop().unwrap_or(State::End);
    }

    fn increase_indent_compact(&mut self, flow: bool, indentless: bool, compact_seq: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { self.best_indent } else { 0 };
        } else if !indentless {
            if self.states.last() == Some(&State::BlockSequenceItem) {
                self.indent += 2;
            } else {
                self.indent = self.best_indent * ((self.indent + self.best_indent) / self.best_indent);
                if compact_seq {
                    self.indent -= 2;
                }
            }
        }
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.increase_indent_compact(flow, indentless, false);
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        if self.foot_indent == indent {
            self.put_break();
        }
        while self.column < indent {
            self.put(b' ');
        }
        self.whitespace = true;
        self.foot_indent = -1;
    }

    fn write_indicator(&mut self, ind: &[u8], need_whitespace: bool, is_whitespace: bool, is_indention: bool) {
        if need_whitespace && !self.whitespace {
            self.put(b' ');
        }
        self.write_all(ind);
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
        self.open_ended = false;
    }

    fn write_comment(&mut self, comment: &[u8]) {
        let mut breaks = false;
        let mut pound = false;
        let mut i = 0;
        while i < comment.len() {
            if is_break(comment, i) {
                self.write_break(comment, &mut i);
                breaks = true;
                pound = false;
            } else {
                if breaks {
                    self.write_indent();
                }
                if !pound {
                    if comment[i] != b'#' {
                        self.put(b'#');
                        self.put(b' ');
                    }
                    pound = true;
                }
                self.write(comment, &mut i);
                self.indention = false;
                breaks = false;
            }
        }
        if !breaks {
            self.put_break();
        }
        self.whitespace = true;
    }

    fn process_head_comment(&mut self) {
        if !self.tail_comment.is_empty() {
            self.write_indent();
            let c = std::mem::take(&mut self.tail_comment);
            self.write_comment(&c);
            self.foot_indent = self.indent.max(0);
        }
        if self.head_comment.is_empty() {
            return;
        }
        self.write_indent();
        let c = std::mem::take(&mut self.head_comment);
        self.write_comment(&c);
    }

    fn process_line_comment_linebreak(&mut self, linebreak: bool) {
        if self.line_comment.is_empty() {
            if linebreak {
                self.put_break();
            }
            return;
        }
        if !self.whitespace {
            self.put(b' ');
        }
        let c = std::mem::take(&mut self.line_comment);
        self.write_comment(&c);
    }

    fn process_line_comment(&mut self) {
        self.process_line_comment_linebreak(false);
    }

    fn process_foot_comment(&mut self) {
        if self.foot_comment.is_empty() {
            return;
        }
        self.write_indent();
        let c = std::mem::take(&mut self.foot_comment);
        self.write_comment(&c);
        self.foot_indent = self.indent.max(0);
    }

    fn event(&self) -> &'e Ev {
        &self.evs[self.pos]
    }

    fn next_is_empty_collection(&self) -> bool {
        matches!(
            (self.evs.get(self.pos), self.evs.get(self.pos + 1)),
            (Some(Ev::SeqStart(_)), Some(Ev::SeqEnd(_))) | (Some(Ev::MapStart(_)), Some(Ev::MapEnd(_)))
        )
    }

    fn check_simple_key(&self) -> bool {
        let len = match self.event() {
            Ev::Scalar { value, binary_tag, .. } => {
                if self.scalar.multiline {
                    return false;
                }
                value.len() + if *binary_tag { 8 } else { 0 }
            }
            Ev::SeqStart(_) | Ev::MapStart(_) => {
                if !self.next_is_empty_collection() {
                    return false;
                }
                0
            }
            _ => return false,
        };
        len <= 128
    }

    fn analyze_event(&mut self) {
        let ev = self.event();
        self.tag_binary = false;
        if let Some(c) = ev.comments() {
            if !c.head.is_empty() {
                self.head_comment = c.head.clone();
            }
            if !c.line.is_empty() {
                self.line_comment = c.line.clone();
            }
            if !c.foot.is_empty() {
                self.foot_comment = c.foot.clone();
            }
            if !c.tail.is_empty() {
                self.tail_comment = c.tail.clone();
            }
        }
        if let Ev::Scalar { value, binary_tag, .. } = ev {
            self.tag_binary = *binary_tag;
            self.analyze_scalar(value);
        }
    }

    fn analyze_scalar(&mut self, value: &[u8]) {
        let a = &mut self.scalar;
        if value.is_empty() {
            *a = Analysis {
                multiline: false,
                flow_plain_allowed: false,
                block_plain_allowed: true,
                single_quoted_allowed: true,
                block_allowed: false,
            };
            return;
        }
        let mut block_indicators = false;
        let mut flow_indicators = false;
        let mut line_breaks = false;
        let mut special_characters = false;
        let mut tab_characters = false;
        let mut leading_space = false;
        let mut leading_break = false;
        let mut trailing_space = false;
        let mut trailing_break = false;
        let mut break_space = false;
        let mut space_break = false;
        let mut previous_space = false;
        let mut previous_break = false;

        if value.len() >= 3 && (value.starts_with(b"---") || value.starts_with(b"...")) {
            block_indicators = true;
            flow_indicators = true;
        }
        let mut preceded_by_whitespace = true;
        let mut i = 0;
        while i < value.len() {
            let w = width(value[i]);
            let followed_by_whitespace = i + w >= value.len() || is_blank(value, i + w);
            if i == 0 {
                match value[i] {
                    b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\'' | b'"'
                    | b'%' | b'@' | b'`' => {
                        flow_indicators = true;
                        block_indicators = true;
                    }
                    b'?' | b':' => {
                        flow_indicators = true;
                        if followed_by_whitespace {
                            block_indicators = true;
                        }
                    }
                    b'-' if followed_by_whitespace => {
                        flow_indicators = true;
                        block_indicators = true;
                    }
                    _ => {}
                }
            } else {
                match value[i] {
                    b',' | b'?' | b'[' | b']' | b'{' | b'}' => flow_indicators = true,
                    b':' => {
                        flow_indicators = true;
                        if followed_by_whitespace {
                            block_indicators = true;
                        }
                    }
                    b'#' if preceded_by_whitespace => {
                        flow_indicators = true;
                        block_indicators = true;
                    }
                    _ => {}
                }
            }
            if value[i] == b'\t' {
                tab_characters = true;
            } else if !is_printable(value, i) {
                special_characters = true;
            }
            if is_space(value, i) {
                if i == 0 {
                    leading_space = true;
                }
                if i + w == value.len() {
                    trailing_space = true;
                }
                if previous_break {
                    break_space = true;
                }
                previous_space = true;
                previous_break = false;
            } else if is_break(value, i) {
                line_breaks = true;
                if i == 0 {
                    leading_break = true;
                }
                if i + w == value.len() {
                    trailing_break = true;
                }
                if previous_space {
                    space_break = true;
                }
                previous_space = false;
                previous_break = true;
            } else {
                previous_space = false;
                previous_break = false;
            }
            preceded_by_whitespace = is_blankz(value, i);
            i += w;
        }
        a.multiline = line_breaks;
        a.flow_plain_allowed = true;
        a.block_plain_allowed = true;
        a.single_quoted_allowed = true;
        a.block_allowed = true;
        if leading_space || leading_break || trailing_space || trailing_break {
            a.flow_plain_allowed = false;
            a.block_plain_allowed = false;
        }
        if trailing_space {
            a.block_allowed = false;
        }
        if break_space {
            a.flow_plain_allowed = false;
            a.block_plain_allowed = false;
            a.single_quoted_allowed = false;
        }
        if space_break || tab_characters || special_characters {
            a.flow_plain_allowed = false;
            a.block_plain_allowed = false;
            a.single_quoted_allowed = false;
        }
        if space_break || special_characters {
            a.block_allowed = false;
        }
        if line_breaks {
            a.flow_plain_allowed = false;
            a.block_plain_allowed = false;
        }
        if flow_indicators {
            a.flow_plain_allowed = false;
        }
        if block_indicators {
            a.block_plain_allowed = false;
        }
    }

    fn run(mut self) -> Zeroizing<Vec<u8>> {
        while self.pos < self.evs.len() {
            self.analyze_event();
            self.state_machine();
            self.pos += 1;
        }
        self.out
    }

    fn state_machine(&mut self) {
        match self.state {
            State::StreamStart => self.emit_stream_start(),
            State::FirstDocumentStart => self.emit_document_start(true),
            State::DocumentStart => self.emit_document_start(false),
            State::DocumentContent => self.emit_document_content(),
            State::DocumentEnd => self.emit_document_end(),
            State::FlowSequenceFirstItem => self.emit_flow_sequence_item(true),
            State::FlowSequenceItem => self.emit_flow_sequence_item(false),
            State::FlowMappingFirstKey => self.emit_flow_mapping_key(true),
            State::FlowMappingKey => self.emit_flow_mapping_key(false),
            State::BlockSequenceFirstItem => self.emit_block_sequence_item(true),
            State::BlockSequenceItem => self.emit_block_sequence_item(false),
            State::BlockMappingFirstKey => self.emit_block_mapping_key(true),
            State::BlockMappingKey => self.emit_block_mapping_key(false),
            State::BlockMappingSimpleValue => self.emit_block_mapping_value(true),
            State::BlockMappingValue => self.emit_block_mapping_value(false),
            State::End => {}
        }
    }

    fn emit_stream_start(&mut self) {
        if self.best_width < 0 {
            self.best_width = i64::from(i32::MAX);
        }
        self.indent = -1;
        self.column = 0;
        self.whitespace = true;
        self.indention = true;
        self.foot_indent = -1;
        self.state = State::FirstDocumentStart;
    }

    fn emit_document_start(&mut self, first: bool) {
        match self.event() {
            Ev::DocStart => {
                if !first {
                    self.write_indent();
                    self.write_indicator(b"---", true, false, false);
                    self.write_indent();
                }
                if !self.head_comment.is_empty() {
                    self.process_head_comment();
                    self.put_break();
                }
                self.state = State::DocumentContent;
            }
            Ev::StreamEnd => {
                if self.open_ended {
                    self.write_indicator(b"...", true, false, false);
                    self.write_indent();
                }
                self.state = State::End;
            }
            _ => self.state = State::End,
        }
    }

    fn emit_document_content(&mut self) {
        self.states.push(State::DocumentEnd);
        self.process_head_comment();
        self.emit_node(true, false, false, false);
        self.process_line_comment();
        self.process_foot_comment();
    }

    fn emit_document_end(&mut self) {
        self.foot_indent = 0;
        self.process_foot_comment();
        self.foot_indent = -1;
        self.write_indent();
        self.state = State::DocumentStart;
    }

    fn emit_flow_sequence_item(&mut self, first: bool) {
        if first {
            self.write_indicator(b"[", true, true, false);
            self.increase_indent(true, false);
            self.flow_level += 1;
        }
        if matches!(self.event(), Ev::SeqEnd(_)) {
            self.flow_level -= 1;
            self.pop_indent();
            if self.column == 0 {
                self.write_indent();
            }
            self.write_indicator(b"]", false, false, false);
            self.process_line_comment();
            self.process_foot_comment();
            self.pop_state();
            return;
        }
        if !first {
            self.write_indicator(b",", false, false, false);
        }
        self.process_head_comment();
        if self.column == 0 {
            self.write_indent();
        }
        self.states.push(State::FlowSequenceItem);
        self.emit_node(false, true, false, false);
        self.process_line_comment();
        self.process_foot_comment();
    }

    fn emit_flow_mapping_key(&mut self, first: bool) {
        if first {
            self.write_indicator(b"{", true, true, false);
            self.increase_indent(true, false);
            self.flow_level += 1;
        }
        if matches!(self.event(), Ev::MapEnd(_)) {
            if (!self.head_comment.is_empty() || !self.foot_comment.is_empty() || !self.tail_comment.is_empty())
                && !first
            {
                self.write_indicator(b",", false, false, false);
            }
            self.process_head_comment();
            self.flow_level -= 1;
            self.pop_indent();
            self.write_indicator(b"}", false, false, false);
            self.process_line_comment();
            self.process_foot_comment();
            self.pop_state();
            return;
        }
        // Non-empty flow mappings are never produced from a sops tree.
        if !first {
            self.write_indicator(b",", false, false, false);
        }
        self.process_head_comment();
        if self.column == 0 {
            self.write_indent();
        }
        self.states.push(State::FlowMappingKey);
        self.emit_node(false, false, true, true);
    }

    fn emit_block_sequence_item(&mut self, first: bool) {
        if first {
            self.increase_indent_compact(false, false, false);
        }
        if matches!(self.event(), Ev::SeqEnd(_)) {
            self.pop_indent();
            self.pop_state();
            return;
        }
        self.process_head_comment();
        self.write_indent();
        self.write_indicator(b"-", true, false, true);
        self.states.push(State::BlockSequenceItem);
        self.emit_node(false, true, false, false);
        self.process_line_comment();
        self.process_foot_comment();
    }

    fn emit_block_mapping_key(&mut self, first: bool) {
        if first {
            self.increase_indent(false, false);
        }
        self.process_head_comment();
        if matches!(self.event(), Ev::MapEnd(_)) {
            self.pop_indent();
            self.pop_state();
            return;
        }
        self.write_indent();
        if !self.line_comment.is_empty() {
            self.key_line_comment = std::mem::take(&mut self.line_comment);
        }
        if self.check_simple_key() {
            self.states.push(State::BlockMappingSimpleValue);
            self.emit_node(false, false, true, true);
            return;
        }
        self.write_indicator(b"?", true, false, true);
        self.states.push(State::BlockMappingValue);
        self.emit_node(false, false, true, false);
    }

    fn emit_block_mapping_value(&mut self, simple: bool) {
        if simple {
            self.write_indicator(b":", false, false, false);
        } else {
            self.write_indent();
            self.write_indicator(b":", true, false, true);
        }
        if !self.key_line_comment.is_empty() {
            match self.event() {
                Ev::Scalar { .. } if self.line_comment.is_empty() => {
                    self.line_comment = std::mem::take(&mut self.key_line_comment);
                }
                Ev::MapStart(_) | Ev::SeqStart(_) => {
                    std::mem::swap(&mut self.line_comment, &mut self.key_line_comment);
                    self.process_line_comment();
                    std::mem::swap(&mut self.line_comment, &mut self.key_line_comment);
                }
                _ => {}
            }
        }
        self.states.push(State::BlockMappingKey);
        self.emit_node(false, false, true, false);
        self.process_line_comment();
        self.process_foot_comment();
    }

    fn emit_node(&mut self, root: bool, _sequence: bool, _mapping: bool, simple_key: bool) {
        self.root_context = root;
        self.simple_key_context = simple_key;
        match self.event() {
            Ev::Scalar { .. } => self.emit_scalar(),
            Ev::SeqStart(_) => {
                self.state = if self.flow_level > 0 || self.next_is_empty_collection() {
                    State::FlowSequenceFirstItem
                } else {
                    State::BlockSequenceFirstItem
                };
            }
            Ev::MapStart(_) => {
                self.state = if self.flow_level > 0 || self.next_is_empty_collection() {
                    State::FlowMappingFirstKey
                } else {
                    State::BlockMappingFirstKey
                };
            }
            _ => {}
        }
    }

    fn select_scalar_style(&mut self, requested: Style) {
        let mut style = requested;
        if self.simple_key_context && self.scalar.multiline {
            style = Style::Double;
        }
        let value_empty = matches!(self.event(), Ev::Scalar { value, .. } if value.is_empty());
        if style == Style::Plain {
            if (self.flow_level > 0 && !self.scalar.flow_plain_allowed)
                || (self.flow_level == 0 && !self.scalar.block_plain_allowed)
            {
                style = Style::Single;
            }
            if value_empty && (self.flow_level > 0 || self.simple_key_context) {
                style = Style::Single;
            }
        }
        if style == Style::Single && !self.scalar.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!self.scalar.block_allowed || self.flow_level > 0 || self.simple_key_context) {
            style = Style::Double;
        }
        self.style = style;
    }

    fn emit_scalar(&mut self) {
        let Ev::Scalar { value, style, .. } = self.event() else {
            return;
        };
        self.select_scalar_style(*style);
        if self.tag_binary {
            if !self.whitespace {
                self.put(b' ');
            }
            self.write_all(b"!!binary");
            self.whitespace = false;
            self.indention = false;
        }
        self.increase_indent(true, false);
        let allow_breaks = !self.simple_key_context;
        match self.style {
            Style::Plain => self.write_plain(value, allow_breaks),
            Style::Single => self.write_single(value, allow_breaks),
            Style::Double => self.write_double(value, allow_breaks),
            Style::Literal => self.write_literal(value),
        }
        self.pop_indent();
        self.pop_state();
    }

    fn write_plain(&mut self, value: &[u8], allow_breaks: bool) {
        if !value.is_empty() && !self.whitespace {
            self.put(b' ');
        }
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < value.len() {
            if is_space(value, i) {
                if allow_breaks && !spaces && self.column > self.best_width && !is_space(value, i + 1) {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else if is_break(value, i) {
                if !breaks && value[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(value, &mut i);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(value, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        if !value.is_empty() {
            self.whitespace = false;
        }
        self.indention = false;
        if self.root_context {
            self.open_ended = true;
        }
    }

    fn write_single(&mut self, value: &[u8], allow_breaks: bool) {
        self.write_indicator(b"'", true, false, false);
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < value.len() {
            if is_space(value, i) {
                if allow_breaks
                    && !spaces
                    && self.column > self.best_width
                    && i > 0
                    && i < value.len() - 1
                    && !is_space(value, i + 1)
                {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else if is_break(value, i) {
                if !breaks && value[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(value, &mut i);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if value[i] == b'\'' {
                    self.put(b'\'');
                }
                self.write(value, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator(b"'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double(&mut self, value: &[u8], allow_breaks: bool) {
        let mut spaces = false;
        self.write_indicator(b"\"", true, false, false);
        let mut i = 0;
        while i < value.len() {
            if !is_printable(value, i)
                || is_bom(value, i)
                || is_break(value, i)
                || value[i] == b'"'
                || value[i] == b'\\'
            {
                let mut octet = value[i];
                let (w, mut v): (usize, u32) = if octet & 0x80 == 0 {
                    (1, u32::from(octet & 0x7F))
                } else if octet & 0xE0 == 0xC0 {
                    (2, u32::from(octet & 0x1F))
                } else if octet & 0xF0 == 0xE0 {
                    (3, u32::from(octet & 0x0F))
                } else {
                    (4, u32::from(octet & 0x07))
                };
                for k in 1..w {
                    octet = value.get(i + k).copied().unwrap_or(0);
                    v = (v << 6) + u32::from(octet & 0x3F);
                }
                i += w;
                self.put(b'\\');
                let esc = match v {
                    0x00 => Some(b'0'),
                    0x07 => Some(b'a'),
                    0x08 => Some(b'b'),
                    0x09 => Some(b't'),
                    0x0A => Some(b'n'),
                    0x0B => Some(b'v'),
                    0x0C => Some(b'f'),
                    0x0D => Some(b'r'),
                    0x1B => Some(b'e'),
                    0x22 => Some(b'"'),
                    0x5C => Some(b'\\'),
                    0x85 => Some(b'N'),
                    0xA0 => Some(b'_'),
                    0x2028 => Some(b'L'),
                    0x2029 => Some(b'P'),
                    _ => None,
                };
                match esc {
                    Some(c) => self.put(c),
                    None => {
                        let (c, digits) = if v <= 0xFF {
                            (b'x', 2)
                        } else if v <= 0xFFFF {
                            (b'u', 4)
                        } else {
                            (b'U', 8)
                        };
                        self.put(c);
                        for k in (0..digits).rev() {
                            let d = ((v >> (k * 4)) & 0x0F) as u8;
                            self.put(if d < 10 { d + b'0' } else { d + b'A' - 10 });
                        }
                    }
                }
                spaces = false;
            } else if is_space(value, i) {
                if allow_breaks && !spaces && self.column > self.best_width && i > 0 && i < value.len() - 1 {
                    self.write_indent();
                    if is_space(value, i + 1) {
                        self.put(b'\\');
                    }
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else {
                self.write(value, &mut i);
                spaces = false;
            }
        }
        self.write_indicator(b"\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_block_scalar_hints(&mut self, value: &[u8]) {
        if is_space(value, 0) || is_break(value, 0) {
            let hint = [b'0' + self.best_indent as u8];
            self.write_indicator(&hint, false, false, false);
        }
        self.open_ended = false;
        let mut chomp: Option<u8> = None;
        if value.is_empty() {
            chomp = Some(b'-');
        } else {
            let mut i = value.len() - 1;
            while i > 0 && value[i] & 0xC0 == 0x80 {
                i -= 1;
            }
            if !is_break(value, i) {
                chomp = Some(b'-');
            } else if i == 0 {
                chomp = Some(b'+');
                self.open_ended = true;
            } else {
                i -= 1;
                while i > 0 && value[i] & 0xC0 == 0x80 {
                    i -= 1;
                }
                if is_break(value, i) {
                    chomp = Some(b'+');
                    self.open_ended = true;
                }
            }
        }
        if let Some(c) = chomp {
            self.write_indicator(&[c], false, false, false);
        }
    }

    fn write_literal(&mut self, value: &[u8]) {
        self.write_indicator(b"|", true, false, false);
        self.write_block_scalar_hints(value);
        self.process_line_comment_linebreak(true);
        self.whitespace = true;
        let mut breaks = true;
        let mut i = 0;
        while i < value.len() {
            if is_break(value, i) {
                self.write_break(value, &mut i);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(value, &mut i);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// Serializes YAML documents exactly like `sops decrypt` does.
pub fn emit(docs: &[Vec<Entry>]) -> Zeroizing<Vec<u8>> {
    let mut evs = vec![Ev::StreamStart];
    for d in docs {
        evs.push(Ev::DocStart);
        node_events(map_node(d), Vec::new(), &mut evs);
        evs.push(Ev::DocEnd);
    }
    evs.push(Ev::StreamEnd);
    Emitter::new(&evs).run()
}

#[cfg(test)]
mod tests {
    use super::super::tree::secret;
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(secret(v.as_bytes()))
    }
    fn pair(k: &str, v: Value) -> Entry {
        Entry::Pair(k.to_string(), v)
    }
    fn out(docs: &[Vec<Entry>]) -> String {
        String::from_utf8(emit(docs).to_vec()).expect("utf8")
    }

    #[test]
    fn scalar_styles() {
        let doc = vec![
            pair("plain", s("hello world")),
            pair("num", s("123")),
            pair("yes", s("yes")),
            pair("colon", s("a: b")),
            pair("lead", s(" x")),
            pair("empty", s("")),
            pair("multi", s("a\nb\n")),
            pair("quote", s("it's")),
            pair("tab", s("a\tb")),
            pair("y", Value::Int(1)),
        ];
        assert_eq!(
            out(&[doc]),
            "plain: hello world\nnum: \"123\"\n\"yes\": \"yes\"\ncolon: 'a: b'\nlead: ' x'\nempty: \"\"\nmulti: |\n    a\n    b\nquote: it's\ntab: \"a\\tb\"\n\"y\": 1\n"
        );
    }

    #[test]
    fn nesting_and_comments() {
        let doc = vec![
            Entry::Comment(secret(b" top")),
            pair(
                "a",
                Value::Map(vec![pair("b", Value::Float(3.0)), Entry::Comment(secret(b" foot"))]),
            ),
            pair(
                "l",
                Value::Seq(vec![
                    Value::Comment(secret(b" head")),
                    s("x"),
                    Value::Map(vec![pair("k", Value::Bool(true)), pair("j", Value::Null)]),
                    Value::Seq(vec![s("m")]),
                ]),
            ),
            pair("e", Value::Seq(vec![])),
            pair("f", Value::Map(vec![])),
        ];
        assert_eq!(
            out(&[doc]),
            "# top\na:\n    b: 3\n    # foot\nl:\n    # head\n    - x\n    - k: true\n      j: null\n    - - m\ne: []\nf: {}\n"
        );
    }

    #[test]
    fn multiple_documents() {
        let d1 = vec![pair("a", Value::Int(1))];
        let d2 = vec![pair("b", Value::Int(2))];
        assert_eq!(out(&[d1, d2]), "a: 1\n---\nb: 2\n");
    }

    #[test]
    fn base60_detection() {
        assert!(is_base60_float("1:20"));
        assert!(is_base60_float("-1_0:59:3.5"));
        assert!(!is_base60_float("1:60"));
        assert!(!is_base60_float("a:1"));
        assert!(!is_base60_float("12"));
    }
}
