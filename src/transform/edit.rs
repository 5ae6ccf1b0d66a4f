//! The edits on a [`Node`] tree: keep or drop by a set of pointers (`allow`, `deny`, `remove`),
//! move a value (`rename`), write one (`set`), take one out (`unwrap`). Each opens only the
//! containers on its path.

use super::node::{Kind, Node};
use super::pointer::{Pointer, Token};
use super::TransformError;
use std::borrow::Cow;

/// A set of pointers as a tree, one branch per token, so one walk of the document applies all
/// of them. `*` branches are merged into the named branches beside them when the tree is
/// built, so a member's branch is found with one lookup.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PathTree {
    /// A listed pointer ends here: the whole value is selected.
    end: bool,
    /// Branches of a named token.
    named: Vec<(Token, PathTree)>,
    /// The `*` branch.
    any: Option<Box<PathTree>>,
}

impl PathTree {
    /// The tree of `pointers`.
    pub(crate) fn new<'p>(pointers: impl IntoIterator<Item = &'p Pointer>) -> PathTree {
        let mut tree = PathTree::default();
        for pointer in pointers {
            tree.insert(&pointer.tokens);
        }
        tree.settle();
        tree
    }

    fn insert(&mut self, tokens: &[Token]) {
        let Some((first, rest)) = tokens.split_first() else {
            self.end = true;
            return;
        };
        let branch = match first {
            Token::Any => self.any.get_or_insert_with(Box::default),
            named => match self.named.iter().position(|(t, _)| t == named) {
                Some(i) => &mut self.named[i].1,
                None => {
                    self.named.push((named.clone(), PathTree::default()));
                    &mut self.named.last_mut().expect("just pushed").1
                }
            },
        };
        branch.insert(rest);
    }

    fn merge(&mut self, other: &PathTree) {
        self.end |= other.end;
        if let Some(any) = &other.any {
            self.any.get_or_insert_with(Box::default).merge(any);
        }
        for (token, branch) in &other.named {
            match self.named.iter_mut().find(|(t, _)| t == token) {
                Some((_, mine)) => mine.merge(branch),
                None => self.named.push((token.clone(), branch.clone())),
            }
        }
    }

    /// Merge `*` into every named branch, and drop what lies below an end (it is all selected).
    fn settle(&mut self) {
        if self.end {
            self.named.clear();
            self.any = None;
            return;
        }
        if let Some(any) = self.any.as_deref() {
            let any = any.clone();
            for (_, branch) in &mut self.named {
                branch.merge(&any);
            }
        }
        for (_, branch) in &mut self.named {
            branch.settle();
        }
        if let Some(any) = &mut self.any {
            any.settle();
        }
    }

    /// Whether the whole document is selected (the empty pointer is listed).
    pub(crate) fn selects_all(&self) -> bool {
        self.end
    }

    fn member(&self, key: &str) -> Option<&PathTree> {
        self.named.iter().find(|(t, _)| t.selects_member(key)).map(|(_, b)| b).or(self.any.as_deref())
    }

    fn element(&self, i: usize) -> Option<&PathTree> {
        self.named.iter().find(|(t, _)| t.selects_element(i)).map(|(_, b)| b).or(self.any.as_deref())
    }
}

/// Keep only what `tree` selects: a selected value whole; an object or array on the way to a
/// selected value with only its selected contents; nothing else (a string, number, boolean or
/// null on the way to a deeper pointer is dropped: it holds no selected field).
pub(crate) fn keep_selected(node: &mut Node<'_>, tree: &PathTree) -> Result<(), TransformError> {
    if tree.end {
        return Ok(());
    }
    node.expand()?;
    let mut failed = None;
    let mut decide = |value: &mut Node<'_>, branch: Option<&PathTree>| match branch {
        None => false,
        Some(b) if b.end => true,
        Some(_) if !value.is_container() => false,
        Some(b) => match keep_selected(value, b) {
            Ok(()) => true,
            Err(e) => {
                failed.get_or_insert(e);
                false
            }
        },
    };
    match node {
        Node::Object(members) => members.retain_mut(|(k, v)| decide(v, tree.member(k))),
        Node::Array(items) => {
            let mut i = 0;
            items.retain_mut(|v| {
                i += 1;
                decide(v, tree.element(i - 1))
            });
        }
        _ => {}
    }
    failed.map_or(Ok(()), Err)
}

/// Remove every value `tree` selects (indexes count in the array as it was). Below a string,
/// number, boolean or null there is nothing to remove.
pub(crate) fn remove_selected(node: &mut Node<'_>, tree: &PathTree) -> Result<(), TransformError> {
    if !node.is_container() {
        return Ok(());
    }
    node.expand()?;
    let mut failed = None;
    let mut decide = |value: &mut Node<'_>, branch: Option<&PathTree>| match branch {
        None => true,
        Some(b) if b.end => false,
        Some(b) => {
            if let Err(e) = remove_selected(value, b) {
                failed.get_or_insert(e);
            }
            true
        }
    };
    match node {
        Node::Object(members) => members.retain_mut(|(k, v)| decide(v, tree.member(k))),
        Node::Array(items) => {
            let mut i = 0;
            items.retain_mut(|v| {
                i += 1;
                decide(v, tree.element(i - 1))
            });
        }
        _ => {}
    }
    failed.map_or(Ok(()), Err)
}

/// Call `f` on every value `prefix` reaches (`*` reaching every element or member); values
/// that are missing or of the wrong shape on the way are skipped.
pub(crate) fn each<'a>(
    node: &mut Node<'a>,
    prefix: &[Token],
    f: &mut dyn FnMut(&mut Node<'a>) -> Result<(), TransformError>,
) -> Result<(), TransformError> {
    let Some((first, rest)) = prefix.split_first() else { return f(node) };
    if !node.is_container() {
        return Ok(());
    }
    node.expand()?;
    match node {
        Node::Object(members) => {
            for (key, value) in members.iter_mut() {
                if first.selects_member(key) {
                    each(value, rest, f)?;
                }
            }
        }
        Node::Array(items) => {
            for (i, value) in items.iter_mut().enumerate() {
                if first.selects_element(i) {
                    each(value, rest, f)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Take the value at `path` (no `*`) out of the document; `None` when there is none.
pub(crate) fn take<'a>(node: &mut Node<'a>, path: &[Token]) -> Result<Option<Node<'a>>, TransformError> {
    let Some((last, parents)) = path.split_last() else { return Ok(None) };
    let mut at = node;
    for token in parents {
        match child(at, token)? {
            Some(next) => at = next,
            None => return Ok(None),
        }
    }
    if !at.is_container() {
        return Ok(None);
    }
    at.expand()?;
    Ok(match at {
        Node::Object(members) => {
            let found = members.iter().position(|(k, _)| last.selects_member(k));
            found.map(|i| members.remove(i).1)
        }
        Node::Array(items) => {
            let found = (0..items.len()).find(|i| last.selects_element(*i));
            found.map(|i| items.remove(i))
        }
        _ => None,
    })
}

/// The existing child at `token` (no `*`), opening `node` if needed.
fn child<'n, 'a>(node: &'n mut Node<'a>, token: &Token) -> Result<Option<&'n mut Node<'a>>, TransformError> {
    if !node.is_container() {
        return Ok(None);
    }
    node.expand()?;
    Ok(match node {
        Node::Object(members) => members.iter_mut().find(|(k, _)| token.selects_member(k)).map(|(_, v)| v),
        Node::Array(items) => items.iter_mut().enumerate().find(|(i, _)| token.selects_element(*i)).map(|(_, v)| v),
        _ => None,
    })
}

/// Write `value` at `path` (no `*`; `pointer` names it in errors): missing objects on the way
/// are created; an existing value is replaced; on an array, an index one past the end or `-`
/// appends. A string, number, boolean or null on the way, or an index past the end, cannot be
/// written through: an error, since the document is not the shape the transform expects.
pub(crate) fn put<'a>(
    node: &mut Node<'a>,
    path: &'a [Token],
    value: Node<'a>,
    pointer: &str,
) -> Result<(), TransformError> {
    let Some((token, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let shape = |kind: Kind| TransformError::Shape {
        pointer: pointer.to_string(),
        reason: match kind {
            Kind::Scalar => "a string, number, boolean or null is in the way",
            _ => "an array index past its end is in the way",
        },
    };
    let kind = node.kind();
    if kind == Kind::Scalar {
        return Err(shape(kind));
    }
    node.expand()?;
    let slot = match node {
        Node::Object(members) => {
            let name = token.name().unwrap_or_default();
            match members.iter().position(|(k, _)| k == name) {
                Some(i) => &mut members[i].1,
                None => {
                    members.push((Cow::Borrowed(name), Node::Object(Vec::new())));
                    &mut members.last_mut().expect("just pushed").1
                }
            }
        }
        Node::Array(items) => {
            let append = token.name() == Some("-");
            match token {
                Token::Name { index: Some(i), .. } if *i < items.len() => &mut items[*i],
                Token::Name { index: Some(i), .. } if *i == items.len() => push(items),
                _ if append => push(items),
                _ => return Err(shape(kind)),
            }
        }
        _ => return Err(shape(kind)),
    };
    if rest.is_empty() {
        *slot = value;
        Ok(())
    } else {
        put(slot, rest, value, pointer)
    }
}

fn push<'n, 'a>(items: &'n mut Vec<Node<'a>>) -> &'n mut Node<'a> {
    items.push(Node::Object(Vec::new()));
    items.last_mut().expect("just pushed")
}

/// Move the value at `from` to `to` (both without `*`). Nothing happens when there is no value
/// at `from`. A move within one object renames the member in place, so the order of members
/// is kept.
pub(crate) fn rename<'a>(
    node: &mut Node<'a>,
    from: &[Token],
    to: &'a [Token],
    pointer: &str,
) -> Result<(), TransformError> {
    if let (Some((last_from, parent_from)), Some((last_to, parent_to))) = (from.split_last(), to.split_last()) {
        if parent_from == parent_to {
            if let (Some(old), Some(new)) = (last_from.name(), last_to.name()) {
                let mut parent = Some(&mut *node);
                for token in parent_from {
                    parent = match parent {
                        Some(p) => child(p, token)?,
                        None => None,
                    };
                }
                let Some(parent) = parent else { return Ok(()) };
                if parent.kind() == Kind::Object {
                    parent.expand()?;
                    if let Node::Object(members) = parent {
                        if members.iter().any(|(k, _)| k == old) {
                            // `old != new`: the settings refuse a rename onto itself.
                            members.retain(|(k, _)| k != new);
                            if let Some(member) = members.iter_mut().find(|(k, _)| k == old) {
                                member.0 = Cow::Borrowed(new);
                            }
                        }
                    }
                    return Ok(());
                }
            }
        }
    }
    match take(node, from)? {
        Some(value) => put(node, to, value, pointer),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pointers(list: &[&str]) -> Vec<Pointer> {
        list.iter().map(|p| Pointer::parse(p).expect("valid")).collect()
    }

    fn edited<'a>(
        body: &'a str,
        f: impl FnOnce(&mut Node<'a>) -> Result<(), TransformError>,
    ) -> Result<Value, TransformError> {
        let mut node = Node::parse(body.as_bytes())?;
        f(&mut node)?;
        let mut out = Vec::new();
        node.write(&mut out)?;
        Ok(serde_json::from_slice(&out).expect("the output is JSON"))
    }

    const DOC: &str = r#"{"id":1,"secret":"s","user":{"name":"n","password":"p"},"items":[{"id":1,"cost":2},{"id":2,"cost":3}],"tags":{"a":{"x":1,"y":2},"b":{"x":3}},"flag":true}"#;

    #[test]
    fn allow_keeps_listed_fields_and_the_containers_on_their_way() {
        let tree = PathTree::new(&pointers(&["/id", "/user/name", "/items/*/id", "/tags/*/x", "/flag/deeper"]));
        let out = edited(DOC, |n| keep_selected(n, &tree)).expect("kept");
        assert_eq!(
            out,
            json!({"id":1,"user":{"name":"n"},"items":[{"id":1},{"id":2}],"tags":{"a":{"x":1},"b":{"x":3}}})
        );
        let tree = PathTree::new(&pointers(&["/items/1", "/items/*/cost", "/tags/a"]));
        let out = edited(DOC, |n| keep_selected(n, &tree)).expect("kept");
        assert_eq!(out, json!({"items":[{"cost":2},{"id":2,"cost":3}],"tags":{"a":{"x":1,"y":2}}}));
    }

    #[test]
    fn wildcards_merge_into_named_branches() {
        // `/*/b` and `/a/*`: `a` keeps everything; another member keeps only `b`.
        let tree = PathTree::new(&pointers(&["/*/b", "/a/*"]));
        let out = edited(r#"{"a":{"b":1,"c":2},"d":{"b":3,"c":4},"e":5}"#, |n| keep_selected(n, &tree)).expect("kept");
        assert_eq!(out, json!({"a":{"b":1,"c":2},"d":{"b":3}}));
    }

    #[test]
    fn deny_removes_listed_fields_everywhere() {
        let tree = PathTree::new(&pointers(&[
            "/secret",
            "/user/password",
            "/items/*/cost",
            "/tags/*/x",
            "/nothing/here",
            "/flag/x",
        ]));
        let out = edited(DOC, |n| remove_selected(n, &tree)).expect("dropped");
        assert_eq!(
            out,
            json!({"id":1,"user":{"name":"n"},"items":[{"id":1},{"id":2}],"tags":{"a":{"y":2},"b":{}},"flag":true})
        );
        // Indexes count in the array as it was.
        let tree = PathTree::new(&pointers(&["/0", "/1"]));
        assert_eq!(edited("[1,2,3]", |n| remove_selected(n, &tree)).expect("dropped"), json!([3]));
    }

    #[test]
    fn rename_moves_values_and_keeps_member_order() {
        let p = pointers(&["/created_at", "/createdAt", "/user/name", "/profile/display/name", "/id", "/flag"]);
        let body = r#"{"id":1,"created_at":"t","flag":true,"user":{"name":"n"}}"#;
        let mut node = Node::parse(body.as_bytes()).expect("json");
        rename(&mut node, &p[0].tokens, &p[1].tokens, "/createdAt").expect("in place");
        rename(&mut node, &p[2].tokens, &p[3].tokens, "/profile/display/name").expect("moved");
        rename(&mut node, &p[4].tokens, &p[5].tokens, "/flag").expect("onto an existing member");
        let mut out = Vec::new();
        node.write(&mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"flag":1,"createdAt":"t","user":{},"profile":{"display":{"name":"n"}}}"#
        );
        // No value at the source: nothing happens.
        assert_eq!(edited(r#"{"a":1}"#, |n| rename(n, &p[0].tokens, &p[1].tokens, "")).expect("no-op"), json!({"a":1}));
    }

    #[test]
    fn put_creates_objects_and_refuses_scalars_in_the_way() {
        let p = pointers(&["/a/b/c", "/n/x", "/list/2", "/list/-", "/list/9", "/list/0/k"]);
        let body = r#"{"n":5,"list":[{"k":0},1]}"#;
        let v = |t: &str| Node::Value(json!(t));
        let out = edited(body, |n| {
            put(n, &p[0].tokens, v("c"), "")?;
            put(n, &p[2].tokens, v("two"), "")?;
            put(n, &p[3].tokens, v("three"), "")?;
            put(n, &p[5].tokens, v("k"), "")
        })
        .expect("written");
        assert_eq!(out, json!({"n":5,"list":[{"k":"k"},1,"two","three"],"a":{"b":{"c":"c"}}}));
        let e = edited(body, |n| put(n, &p[1].tokens, v("x"), "/n/x")).expect_err("5 is in the way");
        assert!(matches!(e, TransformError::Shape { ref pointer, .. } if pointer == "/n/x"));
        assert!(edited(body, |n| put(n, &p[4].tokens, v("x"), "/list/9")).is_err());
    }

    #[test]
    fn each_visits_every_match_and_take_takes_one() {
        let p = pointers(&["/items/*", "/user/name", "/missing/x"]);
        let mut count = 0;
        let out = edited(DOC, |n| {
            each(n, &p[0].tokens, &mut |_| {
                count += 1;
                Ok(())
            })?;
            assert!(take(n, &p[2].tokens)?.is_none());
            let name = take(n, &p[1].tokens)?.expect("present");
            assert_eq!(name.into_value()?, json!("n"));
            Ok(())
        })
        .expect("edited");
        assert_eq!(count, 2);
        assert_eq!(out["user"], json!({"password": "p"}));
    }
}
