//! The `path` of a patch (vcluster.yaml `patches[].path`): the fields of a synced object it
//! changes. Dotted field names, `[N]` for an array element, `["key"]` for a map key whatever
//! its characters (`metadata.labels["example.com/team"]`), and `[*]` or `*` for every element
//! of an array or every entry of a map: `spec.containers[*].name` is one place per container.
//!
//! A path is parsed once, when the configuration is read ([`Path::from_str`]), and expanded
//! against each object ([`Path::expand`]) into the concrete places it names there, each of
//! which an expression reads and writes ([`get`], [`set`]). A place whose parent does not
//! exist is an error of that object, not of the path: the patch is skipped for it, and the
//! object still syncs.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A field or map key (`name`, `["example.com/team"]`).
    Key(String),
    /// An array element.
    Index(usize),
    /// Every element of an array, every entry of a map.
    All,
}

/// What a missing last step reads as.
static NULL: Value = Value::Null;

/// A parsed path, possibly with wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<Segment>);

/// A place in one object: a path without wildcards.
pub type Place = Path;

/// Why a path does not parse: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?}, at position {at}: expected {expected}")]
pub struct ParseError {
    pub path: String,
    pub at: usize,
    pub expected: &'static str,
}

/// Why a path names no place in an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parent} does not exist or is not an object or array")]
pub struct Missing {
    /// The place that should have held the rest of the path.
    pub parent: String,
}

impl FromStr for Path {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let err = |at: usize, expected| ParseError {
            path: text.to_owned(),
            at,
            expected,
        };
        let bytes = text.as_bytes();
        let mut segments = Vec::new();
        let mut at = 0;
        // After a segment: `.`, `[` or the end. After `.`: a name or `*`. At the start: a
        // name, `*` or `[` (a place under a wildcard may begin with an index or a quoted key).
        let mut want_name = true;
        while at < bytes.len() {
            match (want_name, bytes[at]) {
                (true, b'[') if at == 0 => want_name = false,
                (true, b'*') => {
                    segments.push(Segment::All);
                    at += 1;
                    want_name = false;
                }
                (true, b) if is_name_byte(b) => {
                    let start = at;
                    while at < bytes.len() && is_name_byte(bytes[at]) {
                        at += 1;
                    }
                    segments.push(Segment::Key(text[start..at].to_owned()));
                    want_name = false;
                }
                (true, _) => return Err(err(at, "a field name or *")),
                (false, b'.') => {
                    at += 1;
                    want_name = true;
                }
                (false, b'[') => {
                    let (segment, end) = bracket(text, at).map_err(|(at, e)| err(at, e))?;
                    segments.push(segment);
                    at = end;
                }
                (false, _) => return Err(err(at, "., [ or the end")),
            }
        }
        if want_name {
            return Err(err(at, "a field name or *"));
        }
        Ok(Path(segments))
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$'
}

/// The bracketed segment starting at `open` (a `[`), and the index after its `]`.
fn bracket(text: &str, open: usize) -> Result<(Segment, usize), (usize, &'static str)> {
    let rest = &text[open + 1..];
    let close = |len: usize| match text.as_bytes().get(open + 1 + len) {
        Some(b']') => Ok(open + 2 + len),
        _ => Err((open + 1 + len, "]")),
    };
    if rest.starts_with('*') {
        return Ok((Segment::All, close(1)?));
    }
    if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let mut key = String::new();
        let mut chars = rest[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped)) => key.push(escaped),
                    None => return Err((open + 2 + i, "a character after \\")),
                },
                c if c == quote => return Ok((Segment::Key(key), close(i + 2)?)),
                c => key.push(c),
            }
        }
        return Err((text.len(), "a closing quote"));
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err((open + 1, "*, a number or a quoted key"));
    }
    let index = rest[..digits]
        .parse()
        .map_err(|_| (open + 1, "an index that fits"))?;
    Ok((Segment::Index(index), close(digits)?))
}

impl fmt::Display for Path {
    /// The form [`Path::from_str`] reads back; a place shows as `spec.containers[0].name`
    /// (`context.path` of an expression).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if !key.is_empty() && key.bytes().all(is_name_byte) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => {
                    let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
                    write!(f, "[\"{escaped}\"]")?;
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::All => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

impl Path {
    /// The places this path names in `object`: one per element or entry a wildcard passes
    /// over, in their order. Each place's parent exists (the place itself may not: a patch may
    /// set it); an array element past the end is not a place. Below a wildcard, an element
    /// that lacks the rest of the path is passed over (one container without a
    /// `securityContext` does not stop the patch of the others); before one, the path is
    /// missing from the object.
    pub fn expand(&self, object: &Value) -> Result<Vec<Place>, Missing> {
        let mut places = vec![(Vec::new(), object)];
        let last = self.0.len().saturating_sub(1);
        let mut under_wildcard = false;
        for (depth, segment) in self.0.iter().enumerate() {
            let mut next = Vec::new();
            for (place, value) in places {
                let mut next_of_this = Vec::new();
                let stepped = step(segment, depth == last, &place, value, &mut next_of_this);
                if let Err(missing) = stepped
                    && !under_wildcard
                {
                    return Err(missing);
                }
                next.extend(next_of_this);
            }
            under_wildcard |= *segment == Segment::All;
            places = next;
        }
        Ok(places.into_iter().map(|(p, _)| Path(p)).collect())
    }

    fn to_string_or_root(&self) -> String {
        match self.0.is_empty() {
            true => "the object".into(),
            false => self.to_string(),
        }
    }
}

/// The places one `segment` leads to from `place` (holding `value`), into `next`.
fn step<'a>(
    segment: &Segment,
    is_last: bool,
    place: &[Segment],
    value: &'a Value,
    next: &mut Vec<(Vec<Segment>, &'a Value)>,
) -> Result<(), Missing> {
    let missing = || Missing {
        parent: Path(place.to_vec()).to_string_or_root(),
    };
    let child = |segment: Segment| {
        let mut p = place.to_vec();
        p.push(segment);
        p
    };
    match (segment, value) {
        (Segment::All, Value::Array(items)) => next.extend(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (child(Segment::Index(i)), v)),
        ),
        (Segment::All, Value::Object(map)) => {
            next.extend(map.iter().map(|(k, v)| (child(Segment::Key(k.clone())), v)))
        }
        (Segment::Key(key), Value::Object(map)) => match map.get(key) {
            Some(v) => next.push((child(segment.clone()), v)),
            None if is_last => next.push((child(segment.clone()), &NULL)),
            None => {
                return Err(Missing {
                    parent: Path(child(segment.clone())).to_string(),
                });
            }
        },
        (Segment::Index(i), Value::Array(items)) if *i < items.len() => {
            next.push((child(segment.clone()), &items[*i]));
        }
        _ => return Err(missing()),
    }
    Ok(())
}

/// The value at `place` in `object`, if it is there.
pub fn get<'a>(object: &'a Value, place: &Place) -> Option<&'a Value> {
    place
        .0
        .iter()
        .try_fold(object, |value, segment| match segment {
            Segment::Key(key) => value.as_object()?.get(key),
            Segment::Index(i) => value.as_array()?.get(*i),
            Segment::All => None,
        })
}

/// Sets the value at `place` in `object` (a place [`Path::expand`] returned for it), or
/// removes it with `None`: a map key is removed, an array element becomes `null`.
pub fn set(object: &mut Value, place: &Place, value: Option<Value>) -> Result<(), Missing> {
    let Some((last, parents)) = place.0.split_last() else {
        *object = value.unwrap_or(Value::Null);
        return Ok(());
    };
    let missing = || Missing {
        parent: Path(parents.to_vec()).to_string_or_root(),
    };
    let mut parent = object;
    for segment in parents {
        parent = match (segment, parent) {
            (Segment::Key(key), Value::Object(map)) => map.get_mut(key),
            (Segment::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        }
        .ok_or_else(missing)?;
    }
    match (last, parent, value) {
        (Segment::Key(key), Value::Object(map), Some(value)) => {
            map.insert(key.clone(), value);
        }
        (Segment::Key(key), Value::Object(map), None) => {
            map.remove(key);
        }
        (Segment::Index(i), Value::Array(items), value) if *i < items.len() => {
            items[*i] = value.unwrap_or(Value::Null);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn parse(text: &str) -> Path {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_documented_forms_parse() {
        use Segment::*;
        let key = |k: &str| Key(k.to_owned());
        assert_eq!(
            parse("spec.containers[*].name").0,
            [key("spec"), key("containers"), All, key("name")]
        );
        assert_eq!(
            parse(r#"metadata.labels["example.com/team"]"#).0,
            [key("metadata"), key("labels"), key("example.com/team")]
        );
        assert_eq!(parse("metadata.annotations['a']").0[2], key("a"));
        assert_eq!(
            parse("spec.containers[0].volumeMounts.*").0[2..],
            [Index(0), key("volumeMounts"), All]
        );
    }

    #[test]
    fn malformed_paths_say_where() {
        for (text, at) in [
            ("", 0),
            ("spec.", 5),
            ("spec..name", 5),
            ("spec[", 5),
            ("spec[x]", 5),
            ("spec[0", 6),
            (r#"metadata.labels["team]"#, 22),
            ("spec name", 4),
            (".spec", 0),
        ] {
            let err = text.parse::<Path>().unwrap_err();
            assert_eq!(err.at, at, "{text:?}: {err}");
        }
    }

    #[test]
    fn wildcards_expand_to_each_element_and_entry() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                         "metadata": {"labels": {"x": "1", "y": "2"}}});
        let names: Vec<String> = parse("spec.containers[*].name")
            .expand(&pod)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            ["spec.containers[0].name", "spec.containers[1].name"]
        );
        assert_eq!(parse("metadata.labels[*]").expand(&pod).unwrap().len(), 2);
        // The last step may be missing (a patch adds it); a parent may not.
        assert_eq!(
            parse(r#"metadata.labels["new"]"#)
                .expand(&pod)
                .unwrap()
                .len(),
            1
        );
        let err = parse(r#"spec.template.metadata.labels["l"]"#)
            .expand(&pod)
            .unwrap_err();
        assert_eq!(err.parent, "spec.template");
        assert!(parse("spec.containers[2].name").expand(&pod).is_err());
        // Below a wildcard, an element without the rest is passed over.
        let pod = json!({"spec": {"containers": [
            {"name": "a"}, {"name": "b", "securityContext": {}},
        ]}});
        let places = parse("spec.containers[*].securityContext.runAsNonRoot")
            .expand(&pod)
            .unwrap();
        assert_eq!(
            places.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spec.containers[1].securityContext.runAsNonRoot"]
        );
        // A place under a leading wildcard reads back.
        let list = json!([{"a.b": 1}]);
        for place in parse("*[*]").expand(&list).unwrap() {
            assert_eq!(place.to_string().parse::<Path>(), Ok(place));
        }
    }

    #[test]
    fn set_adds_replaces_and_removes() {
        let mut pod =
            json!({"metadata": {"labels": {"x": "1"}}, "spec": {"containers": [{"name": "a"}]}});
        let new = parse(r#"metadata.labels["new"]"#);
        let place = new.expand(&pod).unwrap().remove(0);
        set(&mut pod, &place, Some(json!("v"))).unwrap();
        assert_eq!(pod["metadata"]["labels"]["new"], "v");
        set(&mut pod, &place, None).unwrap();
        assert!(pod["metadata"]["labels"].get("new").is_none());
        let name = parse("spec.containers[0].name")
            .expand(&pod)
            .unwrap()
            .remove(0);
        set(&mut pod, &name, Some(json!("b"))).unwrap();
        assert_eq!(get(&pod, &name), Some(&json!("b")));
    }

    fn segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            "[a-zA-Z_][a-zA-Z0-9_-]{0,8}".prop_map(Segment::Key),
            // Keys of any characters, quotes and backslashes among them.
            "[a-z./\"'\\\\ -]{0,8}".prop_map(Segment::Key),
            (0usize..20).prop_map(Segment::Index),
            Just(Segment::All),
        ]
    }

    fn path() -> impl Strategy<Value = Path> {
        // A path starts with a name (or `*`): `[...]` needs something before it.
        (
            prop_oneof![
                "[a-z][a-z0-9]{0,6}".prop_map(Segment::Key),
                Just(Segment::All)
            ],
            proptest::collection::vec(segment(), 0..6),
        )
            .prop_map(|(first, rest)| Path(std::iter::once(first).chain(rest).collect()))
    }

    /// JSON objects and arrays a few levels deep, with keys a path may name.
    fn object() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![Just(Value::Null), "[a-z]{0,3}".prop_map(Value::from)];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_path_reads_back_as_written(path in path()) {
            let text = path.to_string();
            prop_assert_eq!(text.parse::<Path>(), Ok(path), "{}", text);
        }

        #[test]
        fn every_place_is_concrete_and_its_parent_exists(
            path in proptest::collection::vec(
                prop_oneof![
                    "[a-c]".prop_map(Segment::Key),
                    (0usize..3).prop_map(Segment::Index),
                    Just(Segment::All),
                ],
                1..5,
            ).prop_map(Path),
            object in object(),
        ) {
            let Ok(places) = path.expand(&object) else { return Ok(()) };
            let wildcards = path.0.iter().filter(|s| **s == Segment::All).count();
            prop_assert!(wildcards > 0 || places.len() == 1);
            for place in places {
                prop_assert_eq!(place.0.len(), path.0.len());
                prop_assert!(!place.0.contains(&Segment::All));
                let parent = Path(place.0[..place.0.len() - 1].to_vec());
                prop_assert!(get(&object, &parent).is_some_and(|p| p.is_object() || p.is_array()));
                // Setting a place and reading it back gives the value.
                let mut changed = object.clone();
                set(&mut changed, &place, Some(json!("patched"))).unwrap();
                prop_assert_eq!(get(&changed, &place), Some(&json!("patched")));
            }
        }
    }
}
