//! YAML text to a `serde_json::Value` plus the line and column of every key and list item.
//!
//! Built straight from the parser's events rather than from a YAML document tree, so that
//! nesting depth and alias expansion are bounded here: a hostile file cannot overflow the stack
//! or blow up memory (billion laughs), and loading never panics.

use std::collections::HashMap;

use saphyr::Scalar;
use saphyr_parser::{Event, Parser, Span};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted; real configs use under 10 levels.
const MAX_DEPTH: usize = 64;

/// Most nodes that alias expansion (`*anchor`) may produce in one file.
const MAX_ALIAS_NODES: usize = 100_000;

/// Largest document the file may expand to, in bytes: the text of every key and scalar plus
/// one per value, counting what aliases copy and what anchors keep. 16 MiB is four times the
/// largest file accepted (`crate::MAX_FILE_BYTES`), far above any real config, and keeps a
/// hostile file (one 64 KiB string aliased 16 000 times) from taking gigabytes.
pub(crate) const MAX_EXPANDED_BYTES: usize = 16 << 20;

/// A problem found while building the tree, at a known position or at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Key path such as `routes[1].match.path_prefix`; empty for the whole file.
    pub(crate) key: String,
    /// Explicit position (line, column; 1-based) when the key path cannot locate it.
    pub(crate) at: Option<(usize, usize)>,
    /// What is wrong.
    pub(crate) message: String,
}

/// Where each key path sits in the file (1-based line and column).
#[derive(Debug, Default)]
pub(crate) struct Locations(HashMap<String, (usize, usize)>);

/// The parsed file.
#[derive(Debug)]
pub(crate) struct Tree {
    /// The single document; `None` when the file holds no document.
    pub(crate) root: Option<Value>,
    /// Positions of keys and list items.
    pub(crate) locations: Locations,
    /// Problems that did not stop parsing (duplicate keys, odd keys, bad tagged values).
    pub(crate) issues: Vec<Issue>,
}

// === impl Locations ===

impl Locations {
    /// The position of `key`, or of its nearest parent that has one; `(1, 1)` at worst.
    pub(crate) fn find(&self, key: &str) -> (usize, usize) {
        let mut key = key;
        loop {
            if let Some(pos) = self.0.get(key) {
                return *pos;
            }
            match parent(key) {
                Some(p) => key = p,
                None => return (1, 1),
            }
        }
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``.
fn parent(key: &str) -> Option<&str> {
    if key.is_empty() {
        return None;
    }
    let cut = key.rfind(['.', '[']).unwrap_or(0);
    Some(&key[..cut])
}

/// Joins a parent path and a mapping key.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

// === building ===

enum Frame {
    Seq {
        items: Vec<Value>,
        path: String,
        anchor: usize,
        /// `Budget::built` when the sequence started, to size it for its anchor.
        start: usize,
    },
    Map {
        map: Map<String, Value>,
        path: String,
        anchor: usize,
        /// `Budget::built` when the mapping started.
        start: usize,
        /// The key waiting for its value; `Some(None)` when the key was unusable and its value
        /// is dropped.
        pending: Option<Option<String>>,
    },
    /// A complex (non-scalar) mapping key being skipped; counts open collections.
    Skip(usize),
}

/// An anchored value and its size as [`Budget`] counts it.
struct Anchored {
    value: Value,
    bytes: usize,
}

/// The bytes the document has expanded to so far, checked before each value is built or
/// copied, so the bound holds during expansion and not only after it.
#[derive(Default)]
struct Budget {
    /// The tree's own size: keys, scalars and alias copies.
    built: usize,
    /// Copies kept for anchors.
    kept: usize,
}

impl Budget {
    /// Counts `bytes` more into the tree, or fails once the whole passes the bound.
    fn build(&mut self, bytes: usize, key: &str, at: (usize, usize)) -> Result<(), Issue> {
        self.built = self.built.saturating_add(bytes);
        self.check(key, at)
    }

    /// Counts a copy kept for an anchor.
    fn keep(&mut self, bytes: usize, key: &str, at: (usize, usize)) -> Result<(), Issue> {
        self.kept = self.kept.saturating_add(bytes);
        self.check(key, at)
    }

    fn check(&self, key: &str, at: (usize, usize)) -> Result<(), Issue> {
        if self.built.saturating_add(self.kept) <= MAX_EXPANDED_BYTES {
            return Ok(());
        }
        Err(Issue {
            key: key.to_owned(),
            at: Some(at),
            message: format!(
                "the document expands to more than {} MiB (aliases copy what they name); \
                 a config is far smaller",
                MAX_EXPANDED_BYTES >> 20
            ),
        })
    }
}

fn pos(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// Parses YAML text. `Err` is a syntax error (or a hostile shape) that stops parsing.
pub(crate) fn parse(text: &str) -> Result<Tree, Issue> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut locations = Locations::default();
    let mut issues = Vec::new();
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    let mut alias_nodes = 0usize;
    let mut budget = Budget::default();
    let mut root: Option<Value> = None;
    let mut documents = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| Issue {
            key: String::new(),
            at: Some((e.marker().line(), e.marker().col() + 1)),
            message: format!("invalid YAML: {}", e.info()),
        })?;

        if let Some(Frame::Skip(open)) = stack.last_mut() {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => *open += 1,
                Event::SequenceEnd | Event::MappingEnd => *open -= 1,
                _ => {}
            }
            if let Some(Frame::Skip(0)) = stack.last() {
                stack.pop();
            }
            continue;
        }

        // A node starting inside a mapping with no pending key is that mapping's next key.
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(_)
        );
        if is_node
            && let Some(Frame::Map {
                map, path, pending, ..
            }) = stack.last_mut()
            && pending.is_none()
        {
            match event {
                Event::Scalar(ref key, ..) => {
                    budget.build(key.len().saturating_add(1), path, pos(&span))?;
                    let key = key.to_string();
                    let key_path = child(path, &key);
                    if map.contains_key(&key) {
                        issues.push(Issue {
                            key: key_path.clone(),
                            at: Some(pos(&span)),
                            message: format!("duplicate key `{key}`"),
                        });
                        *pending = Some(None);
                    } else {
                        locations.0.insert(key_path, pos(&span));
                        *pending = Some(Some(key));
                    }
                }
                _ => {
                    issues.push(Issue {
                        key: path.clone(),
                        at: Some(pos(&span)),
                        message: "mapping keys must be plain text".into(),
                    });
                    *pending = Some(None);
                    if !matches!(event, Event::Alias(_)) {
                        stack.push(Frame::Skip(1));
                    }
                }
            }
            continue;
        }

        let here = match stack.last() {
            Some(Frame::Seq { items, path, .. }) => {
                let p = format!("{path}[{}]", items.len());
                if is_node {
                    locations.0.insert(p.clone(), pos(&span));
                }
                p
            }
            Some(Frame::Map {
                path,
                pending: Some(Some(key)),
                ..
            }) => child(path, key),
            // The value of a dropped key: its inner keys must not shadow real ones.
            Some(Frame::Map { path, .. }) => child(path, "<dropped>"),
            _ => String::new(),
        };

        let done: Value = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Issue {
                        key: String::new(),
                        at: Some(pos(&span)),
                        message: "a config file holds one YAML document; found a second one".into(),
                    });
                }
                continue;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Issue {
                        key: here,
                        at: Some(pos(&span)),
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                budget.build(1, &here, pos(&span))?;
                let start = budget.built;
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq {
                        items: Vec::new(),
                        path: here,
                        anchor,
                        start,
                    });
                } else {
                    stack.push(Frame::Map {
                        map: Map::new(),
                        path: here,
                        anchor,
                        start,
                        pending: None,
                    });
                }
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    anchor,
                    start,
                    path,
                }) => {
                    let v = Value::Array(items);
                    let bytes = budget.built - start + 1;
                    remember(&mut anchors, &mut budget, anchor, &v, bytes, &path, &span)?;
                    v
                }
                _ => continue,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    map,
                    anchor,
                    start,
                    path,
                    ..
                }) => {
                    let v = Value::Object(map);
                    let bytes = budget.built - start + 1;
                    remember(&mut anchors, &mut budget, anchor, &v, bytes, &path, &span)?;
                    v
                }
                _ => continue,
            },
            Event::Alias(id) => match anchors.get(&id) {
                Some(Anchored { value: v, bytes }) => {
                    // Checked before the copy is made: the copy is what could exhaust memory.
                    budget.build(*bytes, &here, pos(&span))?;
                    alias_nodes = alias_nodes.saturating_add(count_nodes(v));
                    if alias_nodes > MAX_ALIAS_NODES {
                        return Err(Issue {
                            key: here,
                            at: Some(pos(&span)),
                            message: format!(
                                "aliases expand to more than {MAX_ALIAS_NODES} values"
                            ),
                        });
                    }
                    v.clone()
                }
                None => {
                    issues.push(Issue {
                        key: here,
                        at: Some(pos(&span)),
                        message: "alias to an unknown anchor".into(),
                    });
                    Value::Null
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                let bytes = text.len().saturating_add(1);
                budget.build(bytes, &here, pos(&span))?;
                let v = match Scalar::parse_from_cow_and_metadata(text.clone(), style, tag.as_ref())
                {
                    Some(s) => scalar_to_json(s, &text),
                    None => {
                        issues.push(Issue {
                            key: here.clone(),
                            at: Some(pos(&span)),
                            message: format!("`{text}` does not fit its tag"),
                        });
                        Value::Null
                    }
                };
                remember(&mut anchors, &mut budget, anchor, &v, bytes, &here, &span)?;
                v
            }
        };

        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(done),
            Some(Frame::Map { map, pending, .. }) => {
                if let Some(Some(key)) = pending.take() {
                    map.insert(key, done);
                }
            }
            Some(Frame::Skip(_)) => {}
            None => root = Some(done),
        }
    }

    Ok(Tree {
        root,
        locations,
        issues,
    })
}

/// Keeps a copy of `value` for later aliases when it carries an anchor; the copy counts
/// against the budget too, so nested anchors cannot multiply memory unseen.
fn remember(
    anchors: &mut HashMap<usize, Anchored>,
    budget: &mut Budget,
    anchor: usize,
    value: &Value,
    bytes: usize,
    key: &str,
    span: &Span,
) -> Result<(), Issue> {
    if anchor > 0 {
        budget.keep(bytes, key, pos(span))?;
        let value = value.clone();
        anchors.insert(anchor, Anchored { value, bytes });
    }
    Ok(())
}

/// Counts the values in a tree (bounded by `MAX_DEPTH`, so the recursion is shallow).
fn count_nodes(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(count_nodes).fold(1, usize::saturating_add),
        Value::Object(map) => map.values().map(count_nodes).fold(1, usize::saturating_add),
        _ => 1,
    }
}

fn scalar_to_json(scalar: Scalar<'_>, text: &str) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Number(i.into()),
        // NaN and infinities have no JSON number; keep what was written.
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map_or_else(|| Value::String(text.to_owned()), Value::Number),
        Scalar::String(s) => Value::String(s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_positions_of_keys_and_items() {
        let tree = parse("a:\n  b: 1\nlist:\n  - x: 1\n  - y: 2\n").unwrap();
        assert_eq!(
            tree.root,
            Some(serde_json::json!({"a": {"b": 1}, "list": [{"x": 1}, {"y": 2}]}))
        );
        assert_eq!(tree.locations.find("a.b"), (2, 3));
        assert_eq!(tree.locations.find("list[1]"), (5, 5));
        assert_eq!(tree.locations.find("list[1].y"), (5, 5));
        assert_eq!(tree.locations.find("list[1].missing.deeper"), (5, 5));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
        assert!(err.at.is_some());
    }

    #[test]
    fn reports_duplicate_keys() {
        let tree = parse("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(tree.issues.len(), 1);
        assert_eq!(tree.issues[0].message, "duplicate key `a`");
        assert_eq!(tree.issues[0].at, Some((3, 1)));
    }

    #[test]
    fn expands_aliases_but_bounds_billion_laughs() {
        let tree = parse("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(
            tree.root,
            Some(serde_json::json!({"a": {"k": "v"}, "b": {"k": "v"}}))
        );

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{err:?}");
    }

    #[test]
    fn bounds_the_bytes_aliases_expand_to() {
        // Issue 14: 16 000 copies of one 64 KiB string stay under the node bound but would
        // take a gigabyte.
        let big = "x".repeat(64 << 10);
        let bomb = format!(
            "junk0: &big \"{big}\"\njunk: [{}]\n",
            ["*big"; 16_000].join(", ")
        );
        let err = parse(&bomb).unwrap_err();
        assert!(
            err.message.contains("expands to more than 16 MiB"),
            "{err:?}"
        );
        // Stopped at the copy that passed the bound, long before the 16 000th.
        assert_eq!(err.key, "junk[253]");
        assert_eq!(err.at.map(|(line, _)| line), Some(2), "{err:?}");

        // The same with the copies made through nested anchors.
        let nested = format!(
            "a: &a [\"{big}\", \"{big}\"]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        );
        let err = parse(&nested).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{err:?}");

        // A few copies of a large value are fine.
        let few = format!("junk0: &big \"{big}\"\njunk: [*big, *big, *big]\n");
        let tree = parse(&few).unwrap();
        assert_eq!(tree.root.unwrap()["junk"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn bounds_nesting_depth() {
        let deep = "- ".repeat(10_000) + "x\n";
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nesting deeper"), "{err:?}");
        let flow = "[".repeat(300);
        assert!(parse(&flow).is_err());
    }

    #[test]
    fn rejects_a_second_document() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("one YAML document"), "{err:?}");
    }

    #[test]
    fn keeps_quoted_numbers_as_strings() {
        let tree = parse("a: \"1.2\"\nb: 1.2\nc: .nan\n").unwrap();
        assert_eq!(
            tree.root,
            Some(serde_json::json!({"a": "1.2", "b": 1.2, "c": ".nan"}))
        );
    }
}
