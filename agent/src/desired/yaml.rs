//! A YAML document tree that remembers the line of every node, so errors can say
//! `compose.yaml:12: service web: key "ports": ...`.
//!
//! Built from saphyr-parser's event stream. Anchors and aliases are resolved, and merge keys
//! (`<<: *defaults`, common in compose files next to `x-` extensions) are applied as YAML 1.1
//! defines them: keys already present win.

use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;

/// One node with the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line number in the source file.
    pub line: usize,
    /// What the node holds.
    pub value: Value,
}

/// A YAML value. Scalars keep their text; the compose layer decides how to read them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar. `plain` is false for quoted and block scalars (which are always strings).
    Scalar {
        /// The scalar's text.
        text: String,
        /// Whether the scalar was unquoted (and so may be null, a bool or a number).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order. Keys are scalars (compose never uses complex keys).
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What the parser said.
    pub message: String,
}

impl Node {
    /// The text of a scalar, or None for collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for an unquoted `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The entries of a mapping, or None.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items of a sequence, or None.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Look up a key in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parse the first document of `text`. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
    };
    let mut docs = 0;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
        // saphyr's lines are 1-based.
        let line = span.start.line().max(1);
        match event {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(SyntaxError {
                        line,
                        message: "more than one YAML document in the file".into(),
                    });
                }
            }
            other => builder.event(other, line)?,
        }
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        value: Value::Map(Vec::new()),
    }))
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

struct Builder {
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, line: usize) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    line,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    line,
                    message: "alias to an unknown anchor".into(),
                })?;
                node.line = line;
                self.push(node)
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq {
                    line,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map {
                    line,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { line, anchor, items }) => (
                        Node {
                            line,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        line, anchor, entries, ..
                    }) => (
                        Node {
                            line,
                            value: Value::Map(apply_merge_keys(entries)?),
                        },
                        anchor,
                    ),
                    None => {
                        return Err(SyntaxError {
                            line,
                            message: "unbalanced collection end".into(),
                        })
                    }
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries, pending_key, ..
            }) => {
                match pending_key.take() {
                    None => {
                        if !matches!(node.value, Value::Scalar { .. }) {
                            return Err(SyntaxError {
                                line: node.line,
                                message: "mapping keys must be scalars".into(),
                            });
                        }
                        let key = node.as_str().unwrap_or_default();
                        if key != "<<" && entries.iter().any(|(k, _)| k.as_str() == Some(key)) {
                            return Err(SyntaxError {
                                line: node.line,
                                message: format!("duplicate key {key:?}"),
                            });
                        }
                        *pending_key = Some(node);
                    }
                    Some(key) => entries.push((key, node)),
                }
                Ok(())
            }
        }
    }
}

/// Apply `<<` merge keys: entries from the merged mapping(s) are added unless the mapping
/// already has the key.
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, SyntaxError> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return Ok(entries);
    }
    let mut own: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    let mut merged: Vec<Node> = Vec::new();
    for (k, v) in entries {
        if k.as_str() == Some("<<") {
            match v.value {
                Value::Map(_) => merged.push(v),
                Value::Seq(items) => merged.extend(items),
                _ => {
                    return Err(SyntaxError {
                        line: k.line,
                        message: "merge key `<<` needs a mapping or a list of mappings".into(),
                    })
                }
            }
        } else {
            own.push((k, v));
        }
    }
    for m in merged {
        let Value::Map(extra) = m.value else {
            return Err(SyntaxError {
                line: m.line,
                message: "merge key `<<` needs a mapping or a list of mappings".into(),
            });
        };
        for (k, v) in extra {
            if !own.iter().any(|(ok, _)| ok.as_str() == k.as_str()) {
                own.push((k, v));
            }
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_recorded() {
        let doc = parse("services:\n  web:\n    image: nginx\n    ports:\n      - \"80:80\"\n").expect("valid");
        let web = doc.get("services").and_then(|s| s.get("web")).expect("web");
        assert_eq!(web.get("image").map(|n| n.line), Some(3));
        let ports = web.get("ports").and_then(Node::as_seq).expect("ports");
        assert_eq!(ports[0].line, 5);
        assert_eq!(ports[0].as_str(), Some("80:80"));
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let doc = parse("a: 'yes'\nb: yes\n").expect("valid");
        assert!(matches!(
            doc.get("a").map(|n| &n.value),
            Some(Value::Scalar { plain: false, .. })
        ));
        assert!(matches!(
            doc.get("b").map(|n| &n.value),
            Some(Value::Scalar { plain: true, .. })
        ));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let doc =
            parse("x-base: &base\n  restart: always\n  image: a\nservices:\n  web:\n    <<: *base\n    image: b\n")
                .expect("valid");
        let web = doc.get("services").and_then(|s| s.get("web")).expect("web");
        assert_eq!(web.get("image").and_then(Node::as_str), Some("b"));
        assert_eq!(web.get("restart").and_then(Node::as_str), Some("always"));
    }

    #[test]
    fn duplicate_keys_are_errors_with_line() {
        let e = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("duplicate"));
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("services:\n  web:\n    image: [unclosed\n").expect_err("bad");
        assert!(e.line >= 3, "{e}");
    }

    #[test]
    fn empty_document_is_empty_map() {
        let doc = parse("").expect("valid");
        assert_eq!(doc.as_map().map(<[_]>::len), Some(0));
    }

    #[test]
    fn null_detection() {
        let doc = parse("a:\nb: ~\nc: ''\n").expect("valid");
        assert!(doc.get("a").is_some_and(Node::is_null));
        assert!(doc.get("b").is_some_and(Node::is_null));
        assert!(!doc.get("c").is_some_and(Node::is_null));
    }
}
